//! `POST /hubs/{hub}?id=<connectionToken>`: the client-to-server half of Server-Sent Events and
//! long polling. The body is one or more framed messages (text for JSON, binary for
//! MessagePack), handed to the hub session as one frame; 200 once the session has it.
//!
//! 400 without `id`, 404 for an unknown or closed connection, 405 on a WebSocket connection,
//! 409 while another send on the same connection is in progress, 413 for a body over the
//! frame limit.

use super::HubEndpoints;
use super::{conflict, connection_request, max_frame_bytes, unknown_connection, TransportError};
use crate::connection::{Inbound, TransportKind};
use crate::protocol::HubProtocol;
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn send(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let request = connection_request(&req, &path, &state).await?;
    let connection = request.connection;
    if connection.transport() == Some(TransportKind::WebSockets) {
        return Err(TransportError::PostNotAllowed);
    }
    if connection.is_closed() {
        return Err(unknown_connection());
    }
    let _sending = connection.begin_post().ok_or_else(|| conflict("send"))?;
    let limit = max_frame_bytes(&state);
    let bytes = match body.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err)) => {
            tracing::debug!(connection = %connection.log_id(), error = %err, "reading a send body failed");
            return Err(TransportError::InvalidBody);
        }
        Err(_) => return Err(TransportError::PayloadTooLarge(limit)),
    };
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
