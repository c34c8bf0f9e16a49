//! A throwaway CA for the TLS tests, made at test time (nothing committed): its certificate
//! and a server certificate for `127.0.0.1` and `localhost`, written to a temporary directory.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::PathBuf;
use std::sync::Arc;

pub struct TestCa {
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// A client certificate from the same CA, for mutual TLS.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "signet-device test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");

        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("leaf params");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .expect("leaf certificate");

        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client
            .distinguished_name
            .push(DnType::CommonName, "a signet device");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("client key");
        let client_cert = client
            .signed_by(&client_key, &ca_cert, &ca_key)
            .expect("client certificate");

        let dir = tempfile::tempdir().expect("temp dir");
        let client_cert_file = dir.path().join("client.pem");
        let client_key_file = dir.path().join("client.key");
        std::fs::write(&client_cert_file, client_cert.pem()).expect("write client cert");
        std::fs::write(&client_key_file, client_key.serialize_pem()).expect("write client key");
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("fullchain.pem");
        let key_file = dir.path().join("privkey.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write CA");
        std::fs::write(&cert_file, leaf_cert.pem() + &ca_cert.pem()).expect("write chain");
        std::fs::write(&key_file, leaf_key.serialize_pem()).expect("write key");
        Self {
            _dir: dir,
            ca_file,
            cert_file,
            key_file,
            client_cert_file,
            client_key_file,
            ca_der: ca_cert.der().clone(),
        }
    }

    /// An HTTP client trusting this CA and presenting its client certificate.
    pub fn http_client(&self) -> awc::Client {
        use rustls::pki_types::pem::PemObject;
        let chain = vec![
            rustls::pki_types::CertificateDer::from_pem_file(&self.client_cert_file)
                .expect("client cert"),
        ];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.client_key_file)
            .expect("client key");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
        awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
            .finish()
    }
}
