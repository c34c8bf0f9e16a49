//! A throwaway certificate authority for the TLS tests: certificates are made at test time,
//! nothing is committed. Certificates name `localhost` and `127.0.0.1`.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate chain and its key, PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Clone, Copy)]
pub enum Usage {
    Server,
    ExpiredServer,
    Client,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn issue(&self, usage: Usage) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "signet test");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            Usage::Server | Usage::ExpiredServer => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        if let Usage::ExpiredServer = usage {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        Issued {
            chain_pem: format!("{}{}", cert.pem(), self.cert.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls client configuration trusting this CA only, HTTP/1.1 unless `alpn` says more.
    pub fn client_config(
        &self,
        client_cert: Option<&Issued>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .expect("CA is a valid root");
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
        let mut config = match client_cert {
            Some(issued) => {
                use rustls::pki_types::pem::PemObject;
                let chain =
                    rustls::pki_types::CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("client chain");
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                        .expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// An HTTP client trusting this CA only.
    pub fn http_client(&self, client_cert: Option<&Issued>) -> awc::Client {
        client_over(self.client_config(client_cert, &[]))
    }
}

pub fn client_over(config: Arc<rustls::ClientConfig>) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(config))
        .timeout(std::time::Duration::from_secs(5))
        .finish()
}

/// The files a TLS test server is configured with, in a temporary directory.
pub struct TlsFiles {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    pub fn write(issued: &Issued, ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Self {
            cert: dir.path().join("fullchain.pem"),
            key: dir.path().join("privkey.pem"),
            ca: dir.path().join("ca.pem"),
            _dir: dir,
        };
        files.replace(issued);
        std::fs::write(&files.ca, ca.cert_pem()).expect("write CA");
        files
    }

    /// Replaces the pair, as a certificate renewal does.
    pub fn replace(&self, issued: &Issued) {
        std::fs::write(&self.cert, &issued.chain_pem).expect("write certificate");
        std::fs::write(&self.key, &issued.key_pem).expect("write key");
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SIGNET__TLS__CERT_FILE", path_string(&self.cert)),
            ("SIGNET__TLS__KEY_FILE", path_string(&self.key)),
        ]
    }
}

pub fn path_string(path: &Path) -> String {
    path.display().to_string()
}
