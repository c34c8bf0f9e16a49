//! No sticky sessions, the owning side: requests other nodes forward for a connection this
//! node holds run through the same code as local ones ([`super::long_polling`],
//! [`super::send`], [`super::refresh`]), and their responses travel back as data. A first
//! transport request on a connection that never had a transport takes the connection to the
//! requesting node instead ([`hand_over`]).

use super::forward::Handover;
use super::{
    existing_connection, expired_token_allowed, find_hub, is_enabled, long_polling, send,
    unknown_connection, ConnectionRequest, HubEndpoints, TransportError,
};
use crate::auth::issue::unix_now;
use crate::cluster::forward::{
    ForwardAnswer, ForwardHandler, ForwardKind, ForwardRequest, CARRIED_HEADERS, HANDOVER, MOVED,
};
use crate::connection::{CloseReason, Connection, TransportKind};
use actix_web::body::MessageBody;
use actix_web::http::header;
use actix_web::rt::System;
use actix_web::{HttpResponse, ResponseError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a forwarded request waits for an adoption of its connection under way here.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a cluster node's [`crate::cluster::Forwarder`] runs forwarded requests with.
pub struct ForwardedRequests {
    state: HubEndpoints,
    /// Where requests run: on the actix system's arbiter, like request handlers, because a
    /// forwarded poll may start a hub session, whose tasks are local (`actix_web::rt::spawn`).
    system: Option<System>,
}

impl ForwardedRequests {
    /// Built inside the actix system that runs the server.
    pub fn new(state: HubEndpoints) -> Self {
        Self {
            state,
            system: System::try_current(),
        }
    }
}

#[async_trait::async_trait]
impl ForwardHandler for ForwardedRequests {
    async fn handle(&self, from: &str, request: ForwardRequest) -> ForwardAnswer {
        let (answered, answer) = oneshot::channel();
        let (state, from) = (self.state.clone(), from.to_string());
        let task = async move {
            let response = serve(&state, &from, request)
                .await
                .unwrap_or_else(|err| err.error_response());
            let _ = answered.send(into_answer(response));
        };
        let started = self
            .system
            .as_ref()
            .is_some_and(|system| system.arbiter().spawn(task));
        if !started {
            return into_answer(TransportError::ClusterUnavailable.error_response());
        }
        answer
            .await
            .unwrap_or_else(|_| into_answer(TransportError::ClusterUnavailable.error_response()))
    }
}

async fn serve(
    state: &HubEndpoints,
    from: &str,
    request: ForwardRequest,
) -> Result<HttpResponse, TransportError> {
    let hub = find_hub(state, &request.hub)?;
    if let Some(forwarder) = &state.forwarder {
        // A racing adopter sent here by the old owner: this node may be registering it.
        forwarder.settled(&request.token, SETTLE_TIMEOUT).await;
    }
    let Some(connection) = state
        .connections
        .get(&request.token)
        .filter(|c| *c.hub == *hub.name)
    else {
        return moved_or_unknown(state, from, &request.token);
    };
    if request.kind == ForwardKind::Refresh {
        let lifetime = crate::connection::apply_refresh(
            &state.auth,
            &state.connections,
            Some(&connection),
            request.principal,
            "http",
        )
        .await?;
        return Ok(super::refresh::refreshed(lifetime, None));
    }
    check_expiry(state, &request)?;
    let connection = existing_connection(state, &hub, &request.token, &request.principal).await?;
    if request.kind.adopts() && connection.never_attached() && negotiated_here(state, &connection) {
        if let Some(answer) = hand_over(state, from, &connection) {
            return answer;
        }
    }
    let local = ConnectionRequest {
        hub,
        connection,
        origin: None,
    };
    match request.kind {
        ForwardKind::WebSocket => Err(second_transport(
            state,
            &local.connection,
            TransportKind::WebSockets,
            "WebSocket",
        )),
        ForwardKind::EventStream => Err(second_transport(
            state,
            &local.connection,
            TransportKind::ServerSentEvents,
            "event stream",
        )),
        ForwardKind::Poll => long_polling::answer_poll(local, state).await,
        ForwardKind::Send => send::deliver_forwarded(local, state, request.body).await,
        ForwardKind::Delete => Ok(long_polling::end_polling(&local.connection)),
        ForwardKind::Tunnel => super::tunnel::attach(state, from, local, &request.body).await,
        // Answered above.
        ForwardKind::Refresh => Err(unknown_connection()),
    }
}

/// Whether this node negotiated `connection` (its id names it): only such a connection is
/// handed over, once; one adopted here stays, so two racing adopters cannot pass it around.
fn negotiated_here(state: &HubEndpoints, connection: &Connection) -> bool {
    connection
        .id
        .split_once('.')
        .is_some_and(|(node, _)| node == state.settings.cluster.node_id)
}

/// A connection this node no longer holds: handed over lately to another node than the
/// asking one (its request follows it there), or unknown.
fn moved_or_unknown(
    state: &HubEndpoints,
    from: &str,
    token: &str,
) -> Result<HttpResponse, TransportError> {
    let moved = state
        .forwarder
        .as_ref()
        .and_then(|f| f.handed_over(token))
        .filter(|node| node != from);
    match moved {
        Some(node) => Ok(HttpResponse::Ok().content_type(MOVED).body(node)),
        None => Err(unknown_connection()),
    }
}

/// The expired-opening-token allowance of [`super::connection_request`], applied where the
/// connection is: the requesting node accepted an expired token for this node to judge.
fn check_expiry(state: &HubEndpoints, request: &ForwardRequest) -> Result<(), TransportError> {
    let leeway = i64::try_from(state.settings.jwt.leeway_secs).unwrap_or(i64::MAX);
    let current = request.principal.expires_at.saturating_add(leeway) > unix_now();
    if current || expired_token_allowed(state, &request.token, &request.principal) {
        Ok(())
    } else {
        Err(TransportError::invalid_token())
    }
}

/// What a second stream transport gets here: 404 if disabled, 400 if the connection uses
/// another transport, else 409 (one is in progress).
fn second_transport(
    state: &HubEndpoints,
    connection: &Connection,
    kind: TransportKind,
    what: &'static str,
) -> TransportError {
    if !is_enabled(&state.settings.transports, kind) {
        return TransportError::TransportDisabled(kind);
    }
    match connection.transport() {
        Some(used) if used != kind => TransportError::TransportMismatch(used),
        _ => TransportError::InUse(what),
    }
}

/// Gives `connection`, which never had a transport, to node `to`: takes it out of the
/// registry (one taker wins), silently (no session ran: nothing to tell or count), stops its
/// supervisor, and remembers where it went. `None` if a local transport came first.
fn hand_over(
    state: &HubEndpoints,
    to: &str,
    connection: &Arc<Connection>,
) -> Option<Result<HttpResponse, TransportError>> {
    // Serialized before it is taken: nothing can fail once it is.
    let body = serde_json::to_vec(&Handover::of(connection)).ok()?;
    let Some(taken) = state.connections.remove(&connection.token) else {
        return Some(moved_or_unknown(state, to, &connection.token));
    };
    if !taken.never_attached() {
        // A local transport attached meanwhile: the connection stays.
        if state.connections.insert(taken.clone()).is_err() {
            taken.close(CloseReason::TransportError);
        }
        return None;
    }
    if let Some(forwarder) = &state.forwarder {
        forwarder.remember_handover(&taken.token, to);
    }
    taken.cancellation().cancel();
    tracing::debug!(connection = %taken.log_id(), %to, "handed a negotiated connection over");
    Some(Ok(HttpResponse::Ok().content_type(HANDOVER).body(body)))
}

/// The response as data: status, content type, the [`CARRIED_HEADERS`] and the body. Every
/// answer here has its body in memory (a poll's batch, an error's JSON); one that did not would
/// travel empty.
fn into_answer(response: HttpResponse) -> ForwardAnswer {
    let status = response.status().as_u16();
    let text = |value: &header::HeaderValue| value.to_str().ok().map(str::to_string);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(text)
        .unwrap_or_default();
    let headers = CARRIED_HEADERS
        .into_iter()
        .flat_map(|name| {
            let values = response.headers().get_all(name).filter_map(text);
            values.map(move |value| (name.to_string(), value))
        })
        .collect();
    let body = response.into_body().try_into_bytes().unwrap_or_default();
    ForwardAnswer {
        status,
        content_type,
        body,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    /// What a requesting node writes for the owner's `response`.
    fn forwarded(response: HttpResponse) -> HttpResponse {
        let answer = into_answer(response);
        // The answer crosses the backplane as a frame.
        let frame = crate::cluster::wire::Frame::Forwarded {
            request: 1,
            status: answer.status,
            content_type: answer.content_type,
            body: answer.body,
            headers: answer.headers,
        };
        let origin = crate::cluster::wire::Origin {
            node: "owner".into(),
            epoch: 1,
            sequence: 1,
        };
        let encoded = crate::cluster::wire::encode(&origin, &frame);
        let Ok((
            _,
            crate::cluster::wire::Frame::Forwarded {
                status,
                content_type,
                body,
                headers,
                ..
            },
        )) = crate::cluster::wire::decode(encoded)
        else {
            panic!("the answer's frame reads back");
        };
        let answer = ForwardAnswer {
            status,
            content_type,
            body,
            headers,
        };
        super::super::forward::http_answer(answer, None)
    }

    #[test]
    fn a_forwarded_refusal_keeps_its_challenge_and_its_wait_and_nothing_else() {
        let refused = forwarded(TransportError::invalid_token().error_response());
        let local = TransportError::invalid_token().error_response();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.headers().get(header::WWW_AUTHENTICATE),
            local.headers().get(header::WWW_AUTHENTICATE)
        );
        assert!(local.headers().contains_key(header::WWW_AUTHENTICATE));

        let busy = HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "7"))
            .insert_header((header::SET_COOKIE, "owner=1"))
            .insert_header(("x-owner-only", "yes"))
            .content_type("application/json")
            .body("{}");
        let busy = forwarded(busy);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        let header = |name| busy.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(header(header::RETRY_AFTER.as_str()), Some("7"));
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("set-cookie"), None);
        assert_eq!(header("x-owner-only"), None);
    }
}
