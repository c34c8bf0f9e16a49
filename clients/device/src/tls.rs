//! HTTPS and WSS to the server: rustls (ring) trusting the Mozilla roots bundled in the binary
//! (`webpki-roots`, so a device without a CA store still works) plus `--ca-file` for a private
//! CA, and optionally a client certificate for servers that require mutual TLS.

use crate::config::ConfigError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the device's TLS material is, from the flags or the config file.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The client configuration, built once at start-up so that a bad file is a bad flag (exit 2).
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &options.ca_file {
        let certs = read_certs("--ca-file", path)?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| file_error("--ca-file", path, e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::Tls {
            flag: "--ca-file",
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("--client-cert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_error("--client-key", key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::Tls {
                    flag: "--client-key",
                    reason: format!("does not fit --client-cert: {e}"),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ConfigError::Tls {
                flag: "--client-cert",
                reason: "--client-cert and --client-key go together".into(),
            })
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(flag, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, e))?;
    if certs.is_empty() {
        return Err(file_error(flag, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn file_error(flag: &'static str, path: &Path, error: impl std::fmt::Display) -> ConfigError {
    ConfigError::Tls {
        flag,
        reason: format!("{}: {error}", path.display()),
    }
}

/// A connection failure for logs: a TLS certificate problem names the host and the reason (and
/// how to trust a private CA); anything else is passed through.
pub fn explain_connect_error(host: &str, error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    let reason = text
        .strip_prefix("Failed to connect to host: ")
        .unwrap_or(&text);
    if reason.contains("certificate") || reason.contains("UnknownIssuer") {
        format!(
            "the TLS certificate of {host} is not trusted: {reason} (for a private CA give \
             --ca-file)"
        )
    } else if reason.contains("received corrupt message") || reason.contains("InvalidContentType") {
        format!("TLS with {host} failed: {reason} (is the server speaking plain HTTP?)")
    } else {
        text
    }
}
