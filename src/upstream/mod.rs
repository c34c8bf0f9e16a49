//! Upstream calls: hub methods declared in `[[upstream]]` whose answer comes from a backend.
//! A call that passed the dispatcher's checks (roles, arguments, the envelope of a signed
//! method) is POSTed to the backend as JSON with the caller's principal, signed with the
//! upstream's key ([`signature`]); the backend's `{"result": ...}` or `{"error": "text"}`
//! becomes the completion. Connection events can be POSTed too, best effort. The client's
//! token never leaves the server: the request is built from the principal, not the request.

mod client;
mod signature;

use crate::hub::{Call, HubBuilder, HubError, MethodResult, MethodSpec, Param};
use crate::metrics::Metrics;
use crate::settings::{Secret, UpstreamEvent, UpstreamMethod, UpstreamSettings};
use client::{Backend, PostError, Target};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why the upstream methods could not be declared: the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("configuration key `upstream[{index}].hub`: no hub is named `{hub}`")]
    UnknownHub { index: usize, hub: String },
    #[error("configuration key `upstream[{index}].methods`: `{method}` is already a method of hub `{hub}`")]
    Clash {
        index: usize,
        hub: String,
        method: String,
    },
    #[error("upstream TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot start the thread of upstream[{index}]: {source}")]
    Thread {
        index: usize,
        source: std::io::Error,
    },
}

/// Refuses an `[[upstream]]` naming a hub the server does not serve.
pub fn check_hubs(settings: &[UpstreamSettings], hubs: &[&str]) -> Result<(), UpstreamError> {
    match settings
        .iter()
        .enumerate()
        .find(|(_, upstream)| !hubs.contains(&upstream.hub.as_str()))
    {
        Some((index, upstream)) => Err(UpstreamError::UnknownHub {
            index,
            hub: upstream.hub.clone(),
        }),
        None => Ok(()),
    }
}

/// Declares hub `hub`'s upstream methods and events on its builder; `secrets` are the
/// upstreams' keys, in the order of `settings`.
pub fn register(
    mut builder: HubBuilder,
    hub: &str,
    settings: &[UpstreamSettings],
    secrets: &[Secret],
    metrics: &Metrics,
) -> Result<HubBuilder, UpstreamError> {
    let tls = client::tls_config()?;
    for (index, (config, secret)) in settings.iter().zip(secrets).enumerate() {
        if config.hub != hub {
            continue;
        }
        let upstream = Upstream::start(config, secret, tls.clone(), metrics)
            .map_err(|source| UpstreamError::Thread { index, source })?;
        let upstream = Arc::new(upstream);
        for method in &config.methods {
            if builder.declares(method.name()) {
                return Err(UpstreamError::Clash {
                    index,
                    hub: hub.to_string(),
                    method: method.name().to_string(),
                });
            }
            let spec = spec(method, config.max_arguments);
            let upstream = upstream.clone();
            builder = builder.method(spec, move |call, arguments| {
                upstream
                    .clone()
                    .call(spec.name, spec.signed, call, arguments)
            });
        }
        builder = register_events(builder, &upstream, &config.events);
    }
    Ok(builder)
}

fn register_events(
    mut builder: HubBuilder,
    upstream: &Arc<Upstream>,
    events: &[UpstreamEvent],
) -> HubBuilder {
    for &event in events {
        let upstream = upstream.clone();
        let hook = move |call: Call| {
            upstream.clone().send_event(event, &call);
            async {}
        };
        builder = match event {
            UpstreamEvent::Connected => builder.on_connected(hook),
            UpstreamEvent::Disconnected => builder.on_disconnected(hook),
        };
    }
    builder
}

/// The declaration of a forwarded method. Declarations are `'static` (the method table and
/// the metric labels hold them); these are made once per start-up, so their text is leaked.
fn spec(method: &UpstreamMethod, max_arguments: usize) -> MethodSpec {
    let leak = |text: &str| -> &'static str { Box::leak(text.to_owned().into_boxed_str()) };
    let name = leak(method.name());
    let mut spec = if method.signed() {
        MethodSpec::new(name, &[Param::Object]).signed()
    } else {
        MethodSpec::new(name, &[]).any_arguments(max_arguments)
    };
    if !method.roles().is_empty() {
        let roles: Vec<&'static str> = method.roles().iter().map(|r| leak(r)).collect();
        spec = spec.roles(Box::leak(roles.into_boxed_slice()));
    }
    spec
}

/// One backend with the hub it serves and its bound on requests in flight.
struct Upstream {
    hub: String,
    backend: Backend,
    max_response_bytes: usize,
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

/// Who is calling, as the backend sees it.
#[derive(Serialize)]
struct User<'a> {
    sub: &'a str,
    name: Option<&'a str>,
    roles: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallRequest<'a> {
    hub: &'a str,
    method: &'a str,
    arguments: Vec<Value>,
    connection_id: &'a str,
    user: User<'a>,
    /// The call's argument was a signed envelope, verified; `arguments` holds its command.
    signed: bool,
    /// The client's id of the call, absent for a call that asked for no answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    invocation_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventRequest<'a> {
    event: &'static str,
    hub: &'a str,
    connection_id: &'a str,
    user: User<'a>,
}

/// The backend's answer to a call.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

/// How a forwarded call ended, for the caller and the metrics.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("all max_concurrent_calls requests are in flight")]
    Busy,
    #[error("{0}")]
    Post(PostError),
    #[error("the answer is not the expected JSON: {0}")]
    Invalid(serde_json::Error),
    /// The backend's own `{"error": ...}`: meant for the caller.
    #[error("the backend answered an error")]
    Backend(String),
}

impl Failure {
    fn code(&self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Post(PostError::Timeout) => "timeout",
            Self::Post(PostError::Unreachable(_)) => "unreachable",
            Self::Post(PostError::Status(_)) => "http_error",
            Self::Post(PostError::Oversize) => "oversize",
            Self::Post(PostError::Unreadable(_)) | Self::Invalid(_) => "invalid",
            Self::Backend(_) => "error",
        }
    }

    /// The completion text: fixed wording, never the backend's URL or a cause's detail,
    /// except the backend's own error text.
    fn text(self, method: &str, max_bytes: usize) -> String {
        match self {
            Self::Busy => format!("Upstream '{method}' is busy; try again later."),
            Self::Post(PostError::Timeout) => format!("Upstream '{method}' timed out."),
            Self::Post(PostError::Unreachable(_)) => format!("Upstream '{method}' is unavailable."),
            Self::Post(PostError::Status(status)) => {
                format!("Upstream '{method}' failed (HTTP {status}).")
            }
            Self::Post(PostError::Oversize) => {
                format!("Upstream '{method}' answered more than {max_bytes} bytes.")
            }
            Self::Post(PostError::Unreadable(_)) | Self::Invalid(_) => {
                format!("Upstream '{method}' gave an invalid answer.")
            }
            Self::Backend(text) => text,
        }
    }
}

impl Upstream {
    /// Starts the backend's client thread.
    fn start(
        config: &UpstreamSettings,
        secret: &Secret,
        tls: Arc<rustls::ClientConfig>,
        metrics: &Metrics,
    ) -> std::io::Result<Self> {
        let target = Target {
            url: config.url.clone(),
            secret: secret.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            max_response_bytes: config.max_response_bytes,
            max_concurrent: config.max_concurrent_calls,
        };
        Ok(Self {
            hub: config.hub.clone(),
            backend: Backend::start(target, tls)?,
            max_response_bytes: config.max_response_bytes,
            permits: Arc::new(Semaphore::new(config.max_concurrent_calls)),
            metrics: metrics.clone(),
        })
    }

    /// Forwards one call and turns the backend's answer into the completion.
    async fn call(
        self: Arc<Self>,
        method: &'static str,
        signed: bool,
        call: Call,
        arguments: Vec<Value>,
    ) -> MethodResult {
        let ended = self.forward(method, signed, &call, arguments).await;
        let outcome = ended.as_ref().map_or_else(Failure::code, |_| "ok");
        self.metrics.upstream_call(&self.hub, method, outcome);
        ended.map_err(|failure| {
            if !matches!(failure, Failure::Backend(_)) {
                tracing::warn!(hub = %self.hub, method, outcome, cause = %failure, connection = %call.connection.log_id(), "upstream call failed");
            }
            HubError::hub(failure.text(method, self.max_response_bytes))
        })
    }

    async fn forward(
        &self,
        method: &str,
        signed: bool,
        call: &Call,
        arguments: Vec<Value>,
    ) -> Result<Option<Value>, Failure> {
        let _permit = self.permit().ok_or(Failure::Busy)?;
        let principal = &call.principal;
        let request = CallRequest {
            hub: &self.hub,
            method,
            arguments,
            connection_id: &call.connection.id,
            user: user(principal),
            signed,
            invocation_id: call.invocation_id.as_deref(),
        };
        let body = serde_json::to_vec(&request).map_err(Failure::Invalid)?;
        let answer = self
            .backend
            .post(body.into())
            .await
            .map_err(Failure::Post)?;
        let answer: Answer = serde_json::from_slice(&answer).map_err(Failure::Invalid)?;
        match answer.error {
            Some(text) => Err(Failure::Backend(text)),
            None => Ok(answer.result),
        }
    }

    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// POSTs a connection event in the background: the connection never waits for it, and
    /// a failure is only logged and counted.
    fn send_event(self: Arc<Self>, event: UpstreamEvent, call: &Call) {
        let request = EventRequest {
            event: event.name(),
            hub: &self.hub,
            connection_id: &call.connection.id,
            user: user(&call.principal),
        };
        let Some(permit) = self.permit() else {
            self.event_ended(event, Err(Failure::Busy));
            return;
        };
        let body = serde_json::to_vec(&request).map_err(Failure::Invalid);
        actix_web::rt::spawn(async move {
            let sent = match body {
                Ok(body) => self.backend.post(body.into()).await.map_err(Failure::Post),
                Err(err) => Err(err),
            };
            drop(permit);
            self.event_ended(event, sent.map(drop));
        });
    }

    fn event_ended(&self, event: UpstreamEvent, ended: Result<(), Failure>) {
        let outcome = ended.as_ref().map_or_else(Failure::code, |_| "ok");
        self.metrics
            .upstream_event(&self.hub, event.name(), outcome);
        if let Err(failure) = ended {
            tracing::warn!(hub = %self.hub, event = event.name(), outcome, cause = %failure, "upstream event not delivered");
        }
    }
}

fn user(principal: &crate::auth::Principal) -> User<'_> {
    User {
        sub: &principal.sub,
        name: principal.name.as_deref(),
        roles: &principal.roles,
    }
}
