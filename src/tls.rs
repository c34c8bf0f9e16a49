//! HTTPS and WSS with rustls (ring provider, TLS 1.2 and 1.3 only).
//!
//! The listener's certificate sits behind a [`CertificateStore`] that rustls asks for on every
//! handshake, so a renewed certificate is picked up by new connections while established ones
//! keep the one they negotiated. [`watch`] re-reads the files when they change (polled every
//! `tls.reload_interval_secs`) or on SIGHUP; a pair that fails to load is logged (paths and the
//! reason, never key material) and the current one kept. With `tls.client_ca_file` clients must
//! present a certificate from that CA (mutual TLS); the token is still required on top.

use crate::settings::TlsSettings;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM file: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path} holds no usable private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {path} is not a valid X.509 certificate: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("the certificate in {path} expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("the certificate in {path} is not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("client CA file {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// The crypto provider of every TLS config Signet builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key files, read once; compared to notice a change.
struct KeyFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl KeyFiles {
    fn read(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            cert: read(cert)?,
            key: read(key)?,
        })
    }

    /// A digest of both files, so that the key bytes need not be kept around.
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update((self.cert.len() as u64).to_be_bytes());
        hash.update(&self.cert);
        hash.update(&self.key);
        hash.finalize().into()
    }
}

/// Parses and checks a certificate chain and its key: both PEM, the key matching the leaf, the
/// leaf valid now.
fn certified_key(
    files: &KeyFiles,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    check_validity(leaf, cert_path, SystemTime::now())?;
    // The PEM error names the section type at most, never its contents.
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| TlsError::Key {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
        Err(e) => Err(TlsError::Certificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn check_validity(leaf: &CertificateDer<'_>, path: &Path, now: SystemTime) -> Result<(), TlsError> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf).map_err(|e| TlsError::Certificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let validity = &cert.tbs_certificate.validity;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    if validity.not_after.to_unix_duration() < now {
        return Err(TlsError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before.to_unix_duration() > now {
        return Err(TlsError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let fail = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// The listener's current certificate; rustls asks it on every handshake.
#[derive(Debug)]
pub struct CertificateStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertificateStore {
    fn get(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// TLS for the listener: the loaded certificate, the client CA, and where the files are.
pub struct ServerTls {
    store: Arc<CertificateStore>,
    client_roots: Option<Arc<RootCertStore>>,
    cert_file: PathBuf,
    key_file: PathBuf,
    loaded: [u8; 32],
}

impl ServerTls {
    /// Loads and checks everything `[tls]` names. `Ok(None)` when TLS is off.
    pub fn load(settings: &TlsSettings) -> Result<Option<Self>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
            return Ok(None);
        };
        let files = KeyFiles::read(cert_file, key_file)?;
        let key = certified_key(&files, cert_file, key_file)?;
        let client_roots = match &settings.client_ca_file {
            Some(path) => Some(Arc::new(client_roots(path)?)),
            None => None,
        };
        Ok(Some(Self {
            store: Arc::new(CertificateStore {
                current: RwLock::new(Arc::new(key)),
            }),
            client_roots,
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            loaded: files.digest(),
        }))
    }

    /// The rustls configuration of the listener: TLS 1.2 and 1.3, the certificate from the
    /// store, client certificates required when a client CA is configured.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Certificate {
                path: self.cert_file.clone(),
                reason: e.to_string(),
            })?;
        let builder = match &self.client_roots {
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        path: PathBuf::from("tls.client_ca_file"),
                        reason: e.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        Ok(builder.with_cert_resolver(self.store.clone()))
    }

    /// Re-reads the files; swaps the certificate in when they changed (or `force`) and load.
    /// Returns whether a new certificate is in use.
    fn reload(&mut self, force: bool) -> Result<bool, TlsError> {
        let files = KeyFiles::read(&self.cert_file, &self.key_file)?;
        let digest = files.digest();
        if digest == self.loaded && !force {
            return Ok(false);
        }
        // Remembered even when loading fails, so a bad pair is reported once, not every tick;
        // the next change to either file is tried again.
        self.loaded = digest;
        let key = certified_key(&files, &self.cert_file, &self.key_file)?;
        self.store.set(key);
        Ok(true)
    }
}

/// Reloads the certificate when its files change (checked every `interval`) or on SIGHUP, until
/// `shutdown`.
pub async fn watch(mut tls: ServerTls, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut hangup = hangup_signal();
    loop {
        let force = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reloading the TLS certificate");
                true
            }
        };
        match tls.reload(force) {
            Ok(true) => tracing::info!(
                cert_file = %tls.cert_file.display(),
                "TLS certificate reloaded; new connections use it"
            ),
            Ok(false) => {}
            Err(err) => tracing::error!(
                error = %err,
                "cannot reload the TLS certificate; keeping the current one"
            ),
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; certificates reload on change only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let settings = TlsSettings {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            ..TlsSettings::default()
        };
        let err = ServerTls::load(&settings).err().expect("an error");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
