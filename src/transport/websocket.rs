//! The WebSocket transport: `GET /hubs/{hub}?id=<connectionToken>` with an upgrade, or without
//! `id` when the client skips negotiation. A reader task feeds frames to the hub session; a
//! writer task drains the connection's queue and, when the connection closes, writes the Close
//! message and closes the socket.

use super::{authenticate, create_connection, existing_connection, find_hub, open_session};
use crate::auth::query_param;
use crate::connection::{CloseReason, Connection, OutboundReceiver};
use crate::http::ApiError;
use crate::hub::Inbound;
use crate::protocol::{HubMessage, HubProtocol};
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Several queued messages are written as one frame, up to this many bytes.
const COALESCE_BYTES: usize = 64 * 1024;

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    super::check_origin(&req, &state.settings.server.allowed_origins)?;
    let hub = find_hub(&state, &path)?;
    let principal = authenticate(&req, &state).await?;
    let is_upgrade = req
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return Err(ApiError::bad_request(
            "upgrade_required",
            "this endpoint needs a WebSocket upgrade",
        ));
    }
    let connection = match query_param(req.query_string(), "id") {
        Some(token) => existing_connection(&state, &hub, &token, &principal)?,
        // skipNegotiation: the connection is created here.
        None => create_connection(&state, &hub, principal, false)?,
    };
    if !connection.attach_transport() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "transport_in_use",
            "another transport is already attached to this connection",
        ));
    }
    let outbound = connection.take_outbound().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "transport_in_use",
            "another transport is already attached to this connection",
        )
    })?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::bad_request("websocket_handshake", e.to_string()))?;

    let max_frame = state
        .settings
        .hub
        .max_message_bytes
        .saturating_mul(4)
        .max(64 * 1024);
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    let inbound = open_session(&state, hub, connection.clone(), false);
    actix_web::rt::spawn(state.tasks.track_future(read_frames(
        stream,
        inbound,
        connection.clone(),
    )));
    actix_web::rt::spawn(
        state
            .tasks
            .track_future(write_frames(session, outbound, connection)),
    );
    Ok(response)
}

/// Socket -> session. Ends when the socket closes or the connection does.
async fn read_frames(
    mut stream: actix_ws::AggregatedMessageStream,
    inbound: mpsc::Sender<Inbound>,
    connection: Arc<Connection>,
) {
    loop {
        let message = tokio::select! {
            _ = connection.closed() => return,
            message = stream.next() => message,
        };
        let frame = match message {
            Some(Ok(AggregatedMessage::Text(text))) => Inbound::Text(text.into_bytes()),
            Some(Ok(AggregatedMessage::Binary(bytes))) => Inbound::Binary(bytes),
            Some(Ok(AggregatedMessage::Ping(_) | AggregatedMessage::Pong(_))) => continue,
            Some(Ok(AggregatedMessage::Close(_))) | None => {
                connection.close(CloseReason::ClientClosed);
                return;
            }
            Some(Err(actix_ws::ProtocolError::Overflow)) => {
                connection.close(CloseReason::MessageTooLarge);
                return;
            }
            Some(Err(err)) => {
                tracing::debug!(connection = %connection.id, error = %err, "websocket read failed");
                connection.close(CloseReason::TransportError);
                return;
            }
        };
        if inbound.send(frame).await.is_err() {
            return;
        }
    }
}

/// Queue -> socket. When the connection closes: flush what is queued (unless the client is too
/// slow to take it), write the Close message, close the socket.
async fn write_frames(
    mut session: actix_ws::Session,
    mut outbound: OutboundReceiver,
    connection: Arc<Connection>,
) {
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            frame = outbound.recv() => frame,
            _ = connection.closed() => None,
        };
        let Some(first) = first else { break };
        if !write_batch(&mut session, &connection, first, &mut outbound, &mut batch).await {
            connection.close(CloseReason::TransportError);
            return;
        }
    }
    let reason = connection
        .close_reason()
        .cloned()
        .unwrap_or(CloseReason::Shutdown);
    if reason != CloseReason::SlowConsumer {
        while let Ok(frame) = outbound.try_recv() {
            if !write_batch(&mut session, &connection, frame, &mut outbound, &mut batch).await {
                return;
            }
        }
    }
    if let (Some(protocol), Some(error)) = (connection.protocol(), reason.close_error()) {
        let close = HubMessage::close(Some(error), reason.allow_reconnect());
        if let Ok(bytes) = protocol.encode_to_bytes(&close) {
            let _ = write(&mut session, protocol, bytes).await;
        }
    }
    let code = match reason {
        CloseReason::MessageTooLarge => CloseCode::Size,
        CloseReason::ProtocolError(_) => CloseCode::Protocol,
        CloseReason::Shutdown => CloseCode::Away,
        _ => CloseCode::Normal,
    };
    let _ = session.close(Some(code.into())).await;
}

/// Writes `first` and whatever else is already queued, coalesced into one frame.
async fn write_batch(
    session: &mut actix_ws::Session,
    connection: &Connection,
    first: Bytes,
    outbound: &mut OutboundReceiver,
    batch: &mut BytesMut,
) -> bool {
    // Before the handshake completes only the handshake response (JSON text) is sent.
    let protocol = connection.protocol().unwrap_or(HubProtocol::Json);
    let bytes = if outbound.is_empty() {
        first
    } else {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < COALESCE_BYTES {
            match outbound.try_recv() {
                Ok(next) => batch.extend_from_slice(&next),
                Err(_) => break,
            }
        }
        batch.split().freeze()
    };
    write(session, protocol, bytes).await
}

async fn write(session: &mut actix_ws::Session, protocol: HubProtocol, bytes: Bytes) -> bool {
    match protocol {
        HubProtocol::Json => match ByteString::try_from(bytes) {
            Ok(text) => session.text(text).await.is_ok(),
            Err(_) => {
                tracing::error!("a JSON frame was not valid UTF-8");
                false
            }
        },
        HubProtocol::MessagePack => session.binary(bytes).await.is_ok(),
    }
}
