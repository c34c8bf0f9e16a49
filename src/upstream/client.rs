//! Signed POSTs to one backend, bounded in time and size, over a pool of kept-alive
//! connections. awc's client is bound to its thread while calls run on whichever worker serves
//! their connection, so each backend gets a thread of its own that owns the client and its
//! pool; calls hand it requests through a bounded channel. The thread ends when the backend
//! is dropped (its channel closes).

use super::signature::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::settings::Secret;
use awc::error::{PayloadError, SendRequestError};
use bytes::Bytes;
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Where and how a backend is reached.
pub(super) struct Target {
    pub url: String,
    pub secret: Secret,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    /// Requests in flight at once: the size of the pool and of the request channel.
    pub max_concurrent: usize,
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

/// One request for the backend's thread, with where its answer goes.
struct Job {
    body: Bytes,
    answer: oneshot::Sender<Result<Bytes, PostError>>,
}

/// A backend's handle: send requests, get answers.
pub(super) struct Backend {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
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
    /// Starts the backend's thread.
    pub fn start(target: Target, tls: Arc<ClientConfig>) -> std::io::Result<Self> {
        let (jobs, receiver) = mpsc::channel(target.max_concurrent.max(1));
        let timeout = target.timeout;
        std::thread::Builder::new()
            .name("signet-upstream".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(serve(Arc::new(target), tls, receiver))
            })?;
        Ok(Self { jobs, timeout })
    }

    /// POSTs `body` signed, and returns the 2xx answer's body; the whole exchange, the
    /// answer's body included, must end within the timeout. The caller bounds how many are in
    /// flight, so the channel has room.
    pub async fn post(&self, body: Bytes) -> Result<Bytes, PostError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || PostError::Unreachable("the upstream client has stopped".into());
        self.jobs
            .try_send(Job { body, answer })
            .map_err(|_| stopped())?;
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(PostError::Timeout),
        }
    }
}

/// The backend's thread: one client (one connection pool), each request a task.
async fn serve(target: Arc<Target>, tls: Arc<ClientConfig>, mut jobs: mpsc::Receiver<Job>) {
    let client = awc::Client::builder()
        .connector(
            awc::Connector::new()
                .rustls_0_23(tls)
                .limit(target.max_concurrent),
        )
        .disable_redirects()
        .timeout(target.timeout)
        .finish();
    while let Some(job) = jobs.recv().await {
        let (client, target) = (client.clone(), target.clone());
        actix_web::rt::spawn(async move {
            let exchange = exchange(&client, &target, job.body);
            let answer = match tokio::time::timeout(target.timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(PostError::Timeout),
            };
            // The caller may have given up already.
            let _ = job.answer.send(answer);
        });
    }
}

async fn exchange(client: &awc::Client, target: &Target, body: Bytes) -> Result<Bytes, PostError> {
    let timestamp = crate::auth::issue::unix_now();
    let signature = sign(&target.secret, timestamp, &body);
    let mut response = client
        .post(&target.url)
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
        .limit(target.max_response_bytes)
        .await
        .map_err(|err| match err {
            PayloadError::Overflow => PostError::Oversize,
            other => PostError::Unreadable(other.to_string()),
        })
}
