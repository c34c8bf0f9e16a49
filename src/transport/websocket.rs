//! The WebSocket transport: `GET /hubs/{hub}?id=<connectionToken>` with an upgrade, or without
//! `id` when the client skips negotiation. One task per socket runs a reader, which feeds
//! frames to the hub session and answers WebSocket pings itself, and a writer, which writes
//! what the connection's [`Attachment`] gives it.
//!
//! How a socket ends decides what happens to the connection:
//! - the connection closed (the session ended, an expiry, a kick, a shutdown): the writer
//!   flushes, writes the Close message and closes the socket;
//! - the client sent a close frame: the connection closes;
//! - the socket dropped without one (a network failure), or the server cut it: with stateful
//!   reconnect the connection stays, its unacknowledged messages kept, and a new socket with the
//!   same `id` resumes it; without, the connection closes.
//!
//! A second socket for a connection gets 409, except under stateful reconnect, where a new
//! socket of the same user replaces the attached one (its client has given up on it).

use super::forward::{self, Target};
use super::tunnel;
use super::{
    begin, conflict, create_connection, existing_connection, find_hub, max_frame_bytes,
    unknown_connection, use_transport, COALESCE_BYTES,
};
use super::{Addressed, HubEndpoints, TransportError};
use crate::auth::query_param;
use crate::cluster::forward::ForwardKind;
use crate::connection::{coalesce, Attachment, CloseReason, Connection, Inbound, TransportKind};
use crate::protocol::HubProtocol;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let principal = super::upgrade_principal(&req, &state).await?;
    let connection = match query_param(req.query_string(), "id") {
        Some(token) if forward::held_elsewhere(&state, &token) => {
            let remote = forward::locate(&state, hub.clone(), token, principal, None).await?;
            match forward::resolve(
                &state,
                Addressed::Remote(Box::new(remote.clone())),
                ForwardKind::WebSocket,
            )
            .await?
            {
                Target::Here(request) => request.connection,
                // In use: under stateful reconnect, tunnelled to the connection's node.
                Target::Answered(response) if response.status() == StatusCode::CONFLICT => {
                    return tunnel::connect(&req, body, &state, remote).await;
                }
                Target::Answered(response) => return Ok(response),
            }
        }
        Some(token) => existing_connection(&state, &hub, &token, &principal).await?,
        // skipNegotiation: the connection is created here.
        None => {
            if !state.settings.transports.websockets {
                return Err(TransportError::TransportDisabled(TransportKind::WebSockets));
            }
            create_connection(&state, &hub, principal, None, false).await?
        }
    };
    use_transport(&state, &connection, TransportKind::WebSockets)?;
    if !connection.accepts_transport() {
        return Err(unknown_connection());
    }
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| TransportError::WebSocketHandshake(e.to_string()))?;
    // A client reconnects under stateful reconnect when it believes its socket dead; the server
    // may not have noticed yet (a half-open TCP connection), so the new socket replaces the old
    // one, as ASP.NET Core does. Otherwise a second socket is refused with 409.
    let attached = if connection.is_resumable() {
        connection.attach_replacing().await
    } else {
        connection.attach().await
    };
    let attachment = attached.map_err(|_| conflict("WebSocket"))?;

    let max_frame = max_frame_bytes(&state);
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    begin(&state, hub, &attachment).await;
    actix_web::rt::spawn(state.tasks.track_future(run(stream, session, attachment)));
    Ok(response)
}

/// One socket, from upgrade to close.
async fn run(
    stream: actix_ws::AggregatedMessageStream,
    mut session: actix_ws::Session,
    mut attachment: Attachment,
) {
    let connection = attachment.connection().clone();
    let ending = attachment.ending();
    tokio::join!(
        read_frames(stream, session.clone(), &connection, &ending),
        write_frames(&mut session, &mut attachment),
    );
    if connection.is_closed() {
        close_socket(session, &mut attachment).await;
    } else {
        // The socket dropped or was cut while the connection lives on: detach first, so that a
        // client reconnecting at once finds the connection free, then drop the socket without a
        // close frame, as a network failure would.
        tracing::debug!(connection = %connection.log_id(), resumable = connection.is_resumable(), "websocket detached");
        drop(attachment);
        drop(session);
    }
}

/// The socket went away without a close frame: a resumable connection waits for the client to
/// come back, any other closes.
pub(super) fn transport_lost(
    connection: &Connection,
    ending: &CancellationToken,
    reason: CloseReason,
) {
    if connection.is_resumable() {
        ending.cancel();
    } else {
        connection.close(reason);
    }
}

/// What the reader does with one frame from the socket.
enum Read {
    /// A hub protocol frame for the session.
    Data(Inbound),
    /// A WebSocket Ping, answered with a Pong carrying the same payload (RFC 6455 5.5.2).
    Ping(Bytes),
    /// A Pong (unsolicited or not): nothing to do.
    Pong,
    /// The socket ended; the connection has been told why.
    End,
}

fn classify(
    message: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
    connection: &Connection,
    ending: &CancellationToken,
) -> Read {
    match message {
        Some(Ok(AggregatedMessage::Text(text))) => Read::Data(Inbound::Text(text.into_bytes())),
        Some(Ok(AggregatedMessage::Binary(bytes))) => Read::Data(Inbound::Binary(bytes)),
        Some(Ok(AggregatedMessage::Ping(payload))) => Read::Ping(payload),
        Some(Ok(AggregatedMessage::Pong(_))) => Read::Pong,
        Some(Ok(AggregatedMessage::Close(_))) => {
            connection.close(CloseReason::ClientClosed);
            Read::End
        }
        None => {
            transport_lost(connection, ending, CloseReason::ClientClosed);
            Read::End
        }
        Some(Err(actix_ws::ProtocolError::Overflow)) => {
            connection.close(CloseReason::MessageTooLarge);
            Read::End
        }
        Some(Err(err)) => {
            tracing::debug!(connection = %connection.log_id(), error = %err, "websocket read failed");
            transport_lost(connection, ending, CloseReason::TransportError);
            Read::End
        }
    }
}

/// Socket -> session. Ends when the socket closes or the attachment ends.
///
/// Pings are answered here, not by the session, so a Pong never waits for the hub: while a
/// frame waits for room in the session's inbound queue the reader goes on reading, answering
/// pings, and holds at most one further data frame (the socket is not read past it, which is
/// the back-pressure a flooding client gets).
async fn read_frames(
    mut stream: actix_ws::AggregatedMessageStream,
    mut session: actix_ws::Session,
    connection: &Connection,
    ending: &CancellationToken,
) {
    let mut held: Option<Inbound> = None;
    loop {
        let frame = match held.take() {
            Some(frame) => frame,
            None => {
                let message = tokio::select! {
                    _ = ending.cancelled() => return,
                    message = stream.next() => message,
                };
                match classify(message, connection, ending) {
                    Read::Data(frame) => frame,
                    Read::Ping(payload) => {
                        let _ = session.pong(&payload).await;
                        continue;
                    }
                    Read::Pong => continue,
                    Read::End => return,
                }
            }
        };
        let delivery = connection.receive(frame);
        tokio::pin!(delivery);
        loop {
            tokio::select! {
                biased;
                delivered = &mut delivery => {
                    if delivered.is_err() {
                        return;
                    }
                    break;
                }
                message = stream.next(), if held.is_none() => {
                    match classify(message, connection, ending) {
                        Read::Data(frame) => held = Some(frame),
                        Read::Ping(payload) => {
                            let _ = session.pong(&payload).await;
                        }
                        Read::Pong => {}
                        Read::End => return,
                    }
                }
            }
        }
    }
}

/// Attachment -> socket, until the attachment ends.
async fn write_frames(session: &mut actix_ws::Session, attachment: &mut Attachment) {
    let connection = attachment.connection().clone();
    while let Some(batch) = attachment.next_batch(COALESCE_BYTES).await {
        if !write(session, frame_protocol(&connection), batch).await {
            transport_lost(
                &connection,
                &attachment.ending(),
                CloseReason::TransportError,
            );
            return;
        }
    }
}

/// The connection closed: flush what is left (the Close message included) and close the socket.
async fn close_socket(mut session: actix_ws::Session, attachment: &mut Attachment) {
    let connection = attachment.connection().clone();
    for batch in coalesce(attachment.closing_frames(), COALESCE_BYTES) {
        if !write(&mut session, frame_protocol(&connection), batch).await {
            return;
        }
    }
    let _ = session.close(Some(close_code(&connection).into())).await;
}

/// The close code a socket of a closed connection gets.
pub(super) fn close_code(connection: &Connection) -> CloseCode {
    match connection.close_reason() {
        Some(CloseReason::MessageTooLarge) => CloseCode::Size,
        Some(CloseReason::ProtocolError(_)) => CloseCode::Protocol,
        Some(CloseReason::Shutdown) => CloseCode::Away,
        _ => CloseCode::Normal,
    }
}

/// Before the handshake completes only the handshake response (JSON text) is sent.
pub(super) fn frame_protocol(connection: &Arc<Connection>) -> HubProtocol {
    connection.protocol().unwrap_or(HubProtocol::Json)
}

pub(super) async fn write(
    session: &mut actix_ws::Session,
    protocol: HubProtocol,
    bytes: Bytes,
) -> bool {
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
