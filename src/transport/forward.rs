//! No sticky sessions, the receiving side: a request whose connection token this node does not
//! hold goes to the node that does ([`locate`]: the ownership directory, then the node the
//! token names). That node answers it with the same code as a local request, or, for a first
//! transport request on a connection that never had one, hands the connection over, and this
//! node adopts it ([`adopt`]) and serves the transport itself.
//!
//! The client's bearer token never travels: the principal it proved does. The owner applies
//! the expired-opening-token allowance itself.

use super::{
    existing_connection, register, unknown_connection, Addressed, ConnectionRequest, HubEndpoints,
    TransportError,
};
use crate::auth::Principal;
use crate::cluster::forward::{
    ForwardAnswer, ForwardError, ForwardKind, ForwardRequest, Forwarder, CARRIED_HEADERS, HANDOVER,
    MOVED,
};
use crate::connection::{CloseReason, Connection};
use crate::hub::Hub;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a forwarded request (other than a long poll, which adds the poll timeout) waits
/// for the owner's answer before it is answered as an unknown connection.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request that may adopt the connection waits for the owner's answer.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request on a connection another node holds, authenticated here.
#[derive(Clone)]
pub(super) struct RemoteRequest {
    pub hub: Arc<Hub>,
    pub token: String,
    pub principal: Principal,
    pub origin: Option<HeaderValue>,
    pub owner: String,
}

/// Where a request on a connection is served.
pub(super) enum Target {
    /// Here: the connection was here, or has just been adopted.
    Here(ConnectionRequest),
    /// The owner answered; the answer is to be written as it is.
    Answered(HttpResponse),
}

/// What the owner hands over: what this node needs to recreate the connection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Handover {
    id: String,
    token: String,
    hub: String,
    principal: Principal,
    opening_jti: Option<String>,
    stateful_reconnect: bool,
}

impl Handover {
    pub fn of(connection: &Connection) -> Self {
        Self {
            id: connection.id.clone(),
            token: connection.token.clone(),
            hub: connection.hub.to_string(),
            principal: (*connection.principal()).clone(),
            opening_jti: connection.opening_jti().map(str::to_string),
            stateful_reconnect: connection.stateful_reconnect_requested(),
        }
    }
}

/// Whether `token` is for another node to judge: on a cluster node that does not hold it.
pub(super) fn held_elsewhere(state: &HubEndpoints, token: &str) -> bool {
    state.forwarder.is_some() && state.connections.get(token).is_none()
}

/// The node that holds the connection `token`: 404 if none can, 503 if Redis does not answer.
pub(super) async fn locate(
    state: &HubEndpoints,
    hub: Arc<Hub>,
    token: String,
    principal: Principal,
    origin: Option<HeaderValue>,
) -> Result<RemoteRequest, TransportError> {
    let forwarder = state.forwarder.as_ref().ok_or_else(unknown_connection)?;
    let listed = forwarder
        .owner_of_token(&token)
        .await
        .map_err(unavailable)?;
    let owner = listed
        .or_else(|| forwarder.handed_over(&token))
        .or_else(|| token.split_once('.').map(|(node, _)| node.to_string()))
        .filter(|node| node != forwarder.node_id() && crate::settings::valid_node_id(node))
        .ok_or_else(unknown_connection)?;
    Ok(RemoteRequest {
        hub,
        token,
        principal,
        origin,
        owner,
    })
}

/// Serves `addressed` here if it is local, else asks its owner (`kind`, no body).
pub(super) async fn resolve(
    state: &HubEndpoints,
    addressed: Addressed,
    kind: ForwardKind,
) -> Result<Target, TransportError> {
    match addressed {
        Addressed::Local(request) => Ok(Target::Here(request)),
        Addressed::Remote(remote) => forward(state, *remote, kind, Bytes::new()).await,
    }
}

/// Forwards a request that cannot adopt its connection, and returns the owner's answer.
pub(super) async fn answer(
    state: &HubEndpoints,
    remote: RemoteRequest,
    kind: ForwardKind,
    body: Bytes,
) -> Result<HttpResponse, TransportError> {
    match forward(state, remote, kind, body).await? {
        Target::Answered(response) => Ok(response),
        Target::Here(_) => Err(unknown_connection()),
    }
}

/// Sends the request to its owner, follows one move (the owner handed the connection over
/// meanwhile), and adopts the connection when it is handed over.
async fn forward(
    state: &HubEndpoints,
    remote: RemoteRequest,
    kind: ForwardKind,
    body: Bytes,
) -> Result<Target, TransportError> {
    let forwarder = state.forwarder.as_ref().ok_or_else(unknown_connection)?;
    let timeout = match kind {
        ForwardKind::Poll => {
            Duration::from_secs(state.settings.transports.poll_timeout_secs) + FORWARD_TIMEOUT
        }
        kind if kind.adopts() => ADOPT_TIMEOUT,
        _ => FORWARD_TIMEOUT,
    };
    let _forwarding = forwarder
        .begin_forwarding(
            &remote.principal.sub,
            state.settings.cluster.max_forwarded_per_user,
        )
        .map_err(|full| {
            state.metrics.rate_limited("forwarded_requests");
            TransportError::TooManyForwarded(full.0)
        })?;
    let _adopting = kind
        .adopts()
        .then(|| forwarder.begin_adopting(&remote.token));
    let mut node = remote.owner.clone();
    for _ in 0..2 {
        let request = ForwardRequest {
            kind,
            hub: remote.hub.name.to_string(),
            token: remote.token.clone(),
            principal: remote.principal.clone(),
            body: body.clone(),
        };
        let answer = forwarder
            .call(&node, request, timeout)
            .await
            .map_err(unanswered)?;
        match answer.content_type.as_str() {
            MOVED => node = moved_to(forwarder, &answer.body)?,
            HANDOVER if kind.adopts() => {
                return adopt(state, forwarder, remote, &answer.body)
                    .await
                    .map(Target::Here)
            }
            _ => return Ok(Target::Answered(http_answer(answer, remote.origin))),
        }
    }
    Err(unknown_connection())
}

fn moved_to(forwarder: &Forwarder, body: &[u8]) -> Result<String, TransportError> {
    std::str::from_utf8(body)
        .ok()
        .filter(|node| *node != forwarder.node_id() && crate::settings::valid_node_id(node))
        .map(str::to_string)
        .ok_or_else(unknown_connection)
}

/// Recreates the handed-over connection here (same id and token), registers, supervises and
/// publishes it as this node's, then checks the request against it as a local one.
async fn adopt(
    state: &HubEndpoints,
    forwarder: &Forwarder,
    remote: RemoteRequest,
    handover: &[u8],
) -> Result<ConnectionRequest, TransportError> {
    let handover: Handover = serde_json::from_slice(handover).map_err(|err| {
        tracing::warn!(error = %err, "ignoring an unreadable connection handover");
        unknown_connection()
    })?;
    if handover.token != remote.token || handover.hub != *remote.hub.name {
        return Err(unknown_connection());
    }
    let connection = Arc::new(Connection::adopted(
        handover.id,
        handover.token,
        remote.hub.name.clone(),
        handover.principal,
        handover.opening_jti,
        state.settings.hub.outbound_queue_messages,
        &state.shutdown,
    ));
    if handover.stateful_reconnect {
        connection.request_stateful_reconnect();
    }
    // Registered first, so that a racing request forwarded here finds it taken.
    let released = CancellationToken::new();
    register(
        state,
        connection.clone(),
        Some(released.clone().drop_guard()),
    )
    .await?;
    if let Err(err) = forwarder
        .own(&connection.id, &connection.token, released)
        .await
    {
        // Unlisted, other nodes could not reach it: refused like any request Redis fails.
        connection.close(CloseReason::TransportError);
        return Err(unavailable(err));
    }
    tracing::debug!(connection = %connection.log_id(), from = %remote.owner, "adopted a connection negotiated on another node");
    let connection =
        existing_connection(state, &remote.hub, &remote.token, &remote.principal).await?;
    Ok(ConnectionRequest {
        hub: remote.hub,
        connection,
        origin: remote.origin,
    })
}

/// The owner's answer as this node's response: its status, content type, carried headers
/// (`WWW-Authenticate`, `Retry-After`: only those, whatever the owner sent) and body, with this
/// request's CORS headers.
pub(super) fn http_answer(answer: ForwardAnswer, origin: Option<HeaderValue>) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    if let Ok(content_type) = HeaderValue::from_str(&answer.content_type) {
        if !answer.content_type.is_empty() {
            response.insert_header((header::CONTENT_TYPE, content_type));
        }
    }
    for (name, value) in &answer.headers {
        if !CARRIED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.append_header((name, value));
        }
    }
    response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    super::cors::allow(&mut response, origin);
    response.body(answer.body)
}

fn unavailable(err: ForwardError) -> TransportError {
    tracing::warn!(error = %err, "cannot reach the node holding a connection");
    TransportError::ClusterUnavailable
}

/// No answer: Redis refused the request (503), or the owner is gone or silent (404, as for a
/// connection nobody holds).
fn unanswered(err: ForwardError) -> TransportError {
    match err {
        ForwardError::Unavailable(_) => unavailable(err),
        ForwardError::NoAnswer(_) | ForwardError::Gone(_) => {
            tracing::debug!(error = %err, "a forwarded request got no answer");
            unknown_connection()
        }
    }
}
