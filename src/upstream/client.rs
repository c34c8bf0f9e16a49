//! One signed POST to a backend and the reading of its answer, bounded in time and size.

use super::signature::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::settings::Secret;
use awc::error::{PayloadError, SendRequestError};
use bytes::Bytes;
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;
use std::time::Duration;

/// Where and how a backend is reached.
pub(super) struct Backend {
    pub url: String,
    pub secret: Secret,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub tls: Arc<ClientConfig>,
}

/// Why a POST got no usable answer (the caller's completion text is worded from it).
#[derive(Debug, thiserror::Error)]
pub(super) enum PostError {
    #[error("timed out")]
    Timeout,
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered more than the allowed bytes")]
    Oversize,
    #[error("the answer could not be read: {0}")]
    Unreadable(String),
}

/// TLS for https backends: the webpki roots, ring (the crypto the server already uses).
pub(super) fn tls_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Backend {
    /// POSTs `body` signed, and returns the 2xx answer's body; the whole exchange, the
    /// answer's body included, must end within the timeout.
    pub async fn post(&self, body: Bytes) -> Result<Bytes, PostError> {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(answer) => answer,
            Err(_) => Err(PostError::Timeout),
        }
    }

    async fn exchange(&self, body: Bytes) -> Result<Bytes, PostError> {
        let timestamp = crate::auth::issue::unix_now();
        let signature = sign(&self.secret, timestamp, &body);
        // A client per request: awc's client is bound to its thread, and a call runs on
        // whichever worker serves its connection.
        let client = awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(self.tls.clone()))
            .disable_redirects()
            .timeout(self.timeout)
            .finish();
        let mut response = client
            .post(&self.url)
            .insert_header(("content-type", "application/json"))
            .insert_header((TIMESTAMP_HEADER, timestamp.to_string()))
            .insert_header((SIGNATURE_HEADER, signature))
            .send_body(body)
            .await
            .map_err(|err| match err {
                SendRequestError::Timeout => PostError::Timeout,
                other => PostError::Unreachable(other.to_string()),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(PostError::Status(status.as_u16()));
        }
        response
            .body()
            .limit(self.max_response_bytes)
            .await
            .map_err(|err| match err {
                PayloadError::Overflow => PostError::Oversize,
                other => PostError::Unreadable(other.to_string()),
            })
    }
}
