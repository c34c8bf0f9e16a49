//! `POST /hubs/{hub}?id=<connectionToken>`: the client-to-server half of Server-Sent Events and
//! long polling. The body is one or more framed messages (text for JSON, binary for
//! MessagePack), handed to the hub session as one frame; 200 once the session has it.
//!
//! 400 without `id`, 404 for an unknown or closed connection, 405 on a WebSocket connection,
//! 409 while another send on the same connection is in progress, 413 for a body over the
//! frame limit.

use super::{
    conflict, connection_request, forward, max_frame_bytes, unknown_connection, Addressed,
    ConnectionRequest, HubEndpoints, TransportError,
};
use crate::cluster::forward::ForwardKind;
use crate::connection::{Connection, Inbound, PostGuard, TransportKind};
use crate::protocol::HubProtocol;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::sync::Arc;

pub async fn send(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let request = match connection_request(&req, &path, &state).await? {
        Addressed::Local(request) => request,
        Addressed::Remote(remote) => {
            let bytes = read_body(body, &state).await?;
            return forward::answer(&state, *remote, ForwardKind::Send, bytes).await;
        }
    };
    let sending = accept_send(&request.connection)?;
    let bytes = read_body(body, &state).await?;
    deliver(request, bytes, sending).await
}

/// A send another node received for a connection here: the same checks and delivery.
pub(super) async fn deliver_forwarded(
    request: ConnectionRequest,
    state: &HubEndpoints,
    bytes: Bytes,
) -> Result<HttpResponse, TransportError> {
    let sending = accept_send(&request.connection)?;
    if bytes.len() > max_frame_bytes(state) {
        return Err(TransportError::PayloadTooLarge(max_frame_bytes(state)));
    }
    deliver(request, bytes, sending).await
}

/// 405 on a WebSocket connection, 404 on a closed one, 409 while another send is in
/// progress; else the send may go ahead while the guard lives.
fn accept_send(connection: &Arc<Connection>) -> Result<PostGuard, TransportError> {
    if connection.transport() == Some(TransportKind::WebSockets) {
        return Err(TransportError::PostNotAllowed);
    }
    if connection.is_closed() {
        return Err(unknown_connection());
    }
    connection.begin_post().ok_or_else(|| conflict("send"))
}

/// The body, at most the frame limit (413 beyond it).
async fn read_body(body: web::Payload, state: &HubEndpoints) -> Result<Bytes, TransportError> {
    let limit = max_frame_bytes(state);
    match body.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "reading a send body failed");
            Err(TransportError::InvalidBody)
        }
        Err(_) => Err(TransportError::PayloadTooLarge(limit)),
    }
}

/// Hands the body to the hub session as one frame; 200 once the session has it.
async fn deliver(
    request: ConnectionRequest,
    bytes: Bytes,
    _sending: PostGuard,
) -> Result<HttpResponse, TransportError> {
    let connection = request.connection;
    if !bytes.is_empty() {
        // Before the handshake completes the protocol is unknown: the handshake is JSON text.
        let frame = match connection.protocol() {
            Some(HubProtocol::MessagePack) => Inbound::Binary(bytes),
            _ => Inbound::Text(bytes),
        };
        connection
            .receive(frame)
            .await
            .map_err(|_| unknown_connection())?;
    }
    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, request.origin);
    Ok(response.finish())
}
