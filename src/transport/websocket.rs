//! The WebSocket transport: `GET /hubs/{hub}?id=<connectionToken>` with an upgrade, or without
//! `id` when the client skips negotiation. Per socket, a reader task feeds the client's
//! messages to the hub session and answers WebSocket pings, and the response body is the
//! writer: actix-http polls it whenever it can write, and it takes what the connection's
//! [`Attachment`] gives straight from the queue, everything queued at once as one frame
//! ([`SocketWriter`]). A send to the connection therefore wakes actix-http's own task for the
//! socket, with no writer task or channel in between.
//!
//! How a socket ends decides what happens to the connection:
//! - the connection closed (the session ended, an expiry, a kick, a shutdown): the writer
//!   flushes, writes the Close message and a close frame, and ends the response, which closes
//!   the socket;
//! - the client sent a close frame: the connection closes;
//! - the socket dropped without one (a network failure), or the server cut it: with stateful
//!   reconnect the connection stays, its unacknowledged messages kept, and a new socket with the
//!   same `id` resumes it; without, the connection closes.
//!
//! A second socket for a connection gets 409, except under stateful reconnect, where a new
//! socket of the same user replaces the attached one (its client has given up on it).

mod frames;

use super::forward::{self, Target};
use super::tunnel;
use super::{
    begin, conflict, create_connection, existing_connection, find_hub, max_frame_bytes,
    unknown_connection, use_transport, COALESCE_BYTES,
};
use super::{Addressed, HubEndpoints, TransportError};
use crate::auth::{authenticate_request, query_param, TokenPolicy};
use crate::cluster::forward::ForwardKind;
use crate::connection::{coalesce, Attachment, CloseReason, Connection, Inbound, TransportKind};
use crate::protocol::HubProtocol;
use actix_web::body::{BodyStream, BoxBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::CloseCode;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use frames::{encode_close, encode_data, encode_pong, FrameReader, ReadError, Received};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let principal = authenticate_request(&req, &state.auth, TokenPolicy::Current).await?;
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
            create_connection(&state, &hub, principal, false).await?
        }
    };
    use_transport(&state, &connection, TransportKind::WebSockets)?;
    if !connection.accepts_transport() {
        return Err(unknown_connection());
    }
    let mut handshake = actix_http::ws::handshake(req.head())
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

    let reader = FrameReader::new(body, max_frame_bytes(&state));
    begin(&state, hub, &attachment).await;
    let pong = Arc::new(Pong::default());
    let read = read_frames(
        reader,
        pong.clone(),
        connection.clone(),
        attachment.ending(),
    );
    actix_web::rt::spawn(state.tasks.track_future(read));
    let writer = SocketWriter {
        attachment,
        pong,
        state: Writing::Open,
    };
    let response = handshake
        .message_body(BoxBody::new(BodyStream::new(writer.into_body())))
        .map_err(|e| TransportError::WebSocketHandshake(e.to_string()))?;
    Ok(response.into())
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

/// The latest Ping's payload, for the writer to answer (RFC 6455 5.5.3 allows answering only
/// the most recent of several Pings not answered yet).
#[derive(Debug, Default)]
struct Pong {
    payload: Mutex<Option<Bytes>>,
    due: Notify,
}

impl Pong {
    fn answer(&self, payload: Bytes) {
        match self.payload.lock() {
            Ok(mut slot) => *slot = Some(payload),
            Err(poisoned) => *poisoned.into_inner() = Some(payload),
        }
        self.due.notify_one();
    }

    fn take(&self) -> Option<Bytes> {
        match self.payload.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

/// What the reader does with one message from the socket.
enum Read {
    /// A hub protocol frame for the session.
    Data(Inbound),
    /// Nothing for the session (a Ping answered, a Pong).
    Control,
    /// The socket ended; the connection has been told why.
    End,
}

fn classify(
    message: Option<Result<Received, ReadError>>,
    pong: &Pong,
    connection: &Connection,
    ending: &CancellationToken,
) -> Read {
    match message {
        Some(Ok(Received::Text(text))) => Read::Data(Inbound::Text(text)),
        Some(Ok(Received::Binary(bytes))) => Read::Data(Inbound::Binary(bytes)),
        Some(Ok(Received::Ping(payload))) => {
            pong.answer(payload);
            Read::Control
        }
        Some(Ok(Received::Pong)) => Read::Control,
        Some(Ok(Received::Close)) => {
            connection.close(CloseReason::ClientClosed);
            Read::End
        }
        None => {
            transport_lost(connection, ending, CloseReason::ClientClosed);
            Read::End
        }
        Some(Err(ReadError::TooLarge)) => {
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
/// Pings are answered here (through the writer), not by the session, so a Pong never waits
/// for the hub: while a frame waits for room in the session's inbound queue the reader goes on
/// reading, answering pings, and holds at most one further data frame (the socket is not read
/// past it, which is the back-pressure a flooding client gets).
async fn read_frames<S, E>(
    mut reader: FrameReader<S>,
    pong: Arc<Pong>,
    connection: Arc<Connection>,
    ending: CancellationToken,
) where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut held: Option<Inbound> = None;
    loop {
        let frame = match held.take() {
            Some(frame) => frame,
            None => {
                let message = tokio::select! {
                    _ = ending.cancelled() => return,
                    message = reader.next() => message,
                };
                match classify(message, &pong, &connection, &ending) {
                    Read::Data(frame) => frame,
                    Read::Control => continue,
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
                message = reader.next(), if held.is_none() => {
                    match classify(message, &pong, &connection, &ending) {
                        Read::Data(frame) => held = Some(frame),
                        Read::Control => {}
                        Read::End => return,
                    }
                }
            }
        }
    }
}

/// Where the writer is in the socket's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// Writing what the connection queues.
    Open,
    /// The response ended as it should: after the close frame, or without one for a
    /// connection that lives on (the socket was cut, or the client is to resume).
    Done,
}

/// The response body of a WebSocket: the connection's outbound traffic, as frames.
struct SocketWriter {
    attachment: Attachment,
    pong: Arc<Pong>,
    state: Writing,
}

impl SocketWriter {
    /// The response body: actix-http polls it whenever it can write to the socket.
    fn into_body(self) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + 'static {
        futures_util::stream::unfold(self, |mut writer| async move {
            let chunk = writer.next_chunk().await?;
            Some((Ok(chunk), writer))
        })
    }

    /// The next bytes for the socket: a Pong, or everything queued (up to about
    /// [`COALESCE_BYTES`]) as one frame; at the end, the close frame. `None` ends the response.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.state == Writing::Done {
            return None;
        }
        let connection = self.attachment.connection().clone();
        let mut out = BytesMut::new();
        tokio::select! {
            biased;
            _ = self.pong.due.notified() => {
                if let Some(payload) = self.pong.take() {
                    encode_pong(&mut out, &payload);
                }
            }
            batch = self.attachment.next_batch(COALESCE_BYTES) => match batch {
                Some(batch) => {
                    if !encode_data(&mut out, frame_protocol(&connection), &batch) {
                        tracing::error!("a JSON frame was not valid UTF-8");
                        // Dropping the writer ends the socket as a lost transport.
                        return None;
                    }
                }
                None => {
                    self.state = Writing::Done;
                    if !connection.is_closed() {
                        // The socket was cut, or dropped, while the connection lives on: end
                        // the response without a close frame, as a network failure would (the
                        // attachment lets go with the writer, so a client reconnecting at once
                        // finds the connection free).
                        tracing::debug!(connection = %connection.log_id(), resumable = connection.is_resumable(), "websocket detached");
                        return None;
                    }
                    self.closing(&connection, &mut out);
                }
            },
        }
        Some(out.freeze())
    }

    /// The connection closed: what is left (the Close message included), then the close frame.
    fn closing(&mut self, connection: &Arc<Connection>, out: &mut BytesMut) {
        let protocol = frame_protocol(connection);
        for batch in coalesce(self.attachment.closing_frames(), COALESCE_BYTES) {
            if !encode_data(out, protocol, &batch) {
                tracing::error!("a JSON frame was not valid UTF-8");
                return;
            }
        }
        encode_close(out, close_code(connection));
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        // actix-http dropped the response before it ended: the socket failed.
        if self.state != Writing::Done {
            transport_lost(
                self.attachment.connection(),
                &self.attachment.ending(),
                CloseReason::TransportError,
            );
        }
    }
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
