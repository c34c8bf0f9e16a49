//! The WebSocket transport: `GET /hubs/{hub}?id=<connectionToken>` with an upgrade, or without
//! `id` when the client skips negotiation. The handler ([`connect`]) runs every check and
//! answers 101 carrying a [`Takeover`]; the upgrade service ([`WebSocketUpgrade`]) writes the
//! 101 and then owns the raw socket (actix-http's buffers dropped) and serves it here: one
//! task per socket joins the reading half, which feeds the client's messages to the hub
//! session and has WebSocket pings answered, and the writing half, which takes what the
//! connection's [`Attachment`] gives straight from the queue, everything queued at once as one
//! frame. An idle socket holds no buffer (`socket.rs`).
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

pub(super) mod frames;
pub(super) mod socket;
mod upgrade;

pub use upgrade::WebSocketUpgrade;

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
use actix_codec::{AsyncRead, AsyncWrite};
use actix_http::ws::CloseCode;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use frames::{encode_close, encode_data, encode_pong, FrameReader, ReadError, Received};
use socket::{Pong, Socket};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a socket that ended gets to send its TLS close_notify and FIN.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let principal = super::upgrade_principal(&req, &state).await?;
    let connection = match query_param(req.query_string(), "id") {
        Some(token) if forward::held_elsewhere(&state, &token) => {
            let principal = Arc::unwrap_or_clone(principal);
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
                    return tunnel::connect(&req, &state, remote).await;
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
            create_connection(&state, &hub, Arc::unwrap_or_clone(principal), None, false).await?
        }
    };
    use_transport(&state, &connection, TransportKind::WebSockets)?;
    if !connection.accepts_transport() {
        return Err(unknown_connection());
    }
    let handshake = switching_protocols(&req)?;
    // A client reconnects under stateful reconnect when it believes its socket dead; the server
    // may not have noticed yet (a half-open TCP connection), so the new socket replaces the old
    // one, as ASP.NET Core does. Otherwise a second socket is refused with 409.
    let attached = if connection.is_resumable() {
        connection.attach_replacing().await
    } else {
        connection.attach().await
    };
    let attachment = attached.map_err(|_| conflict("WebSocket"))?;
    begin(&state, hub, &attachment).await;
    Ok(take_over(handshake, &state, Serve::Local(attachment)))
}

/// The 101 answering a valid WebSocket handshake.
pub(super) fn switching_protocols(req: &HttpRequest) -> Result<HttpResponse, TransportError> {
    let handshake = actix_http::ws::handshake(req.head())
        .map_err(|e| TransportError::WebSocketHandshake(e.to_string()))?
        .finish();
    Ok(HttpResponse::from(handshake.map_into_boxed_body()))
}

/// `response` (a 101) carrying what runs on the socket once it is written.
pub(super) fn take_over(
    mut response: HttpResponse,
    state: &HubEndpoints,
    serve: Serve,
) -> HttpResponse {
    response.extensions_mut().insert(Takeover {
        serve: Some(serve),
        max_frame: max_frame_bytes(state),
        tasks: state.tasks.clone(),
    });
    response
}

/// What runs on an upgraded socket, in the extensions of the 101 the handler answers:
/// [`WebSocketUpgrade`] takes it out, writes the 101 and hands it the socket. Dropped without
/// a socket (the 101 could not be written), it ends as a lost transport.
pub(super) struct Takeover {
    serve: Option<Serve>,
    max_frame: usize,
    /// Shutdown waits for the socket as for every connection task.
    tasks: TaskTracker,
}

pub(super) enum Serve {
    /// A connection of this node.
    Local(Attachment),
    /// A connection another node holds, through the tunnel to it.
    Tunnel(tunnel::Edge),
}

impl Takeover {
    /// Serves the socket `io` until it ends; `early` are bytes the client sent right behind
    /// the upgrade request, already read.
    async fn serve<T>(mut self, io: T, early: Vec<u8>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(serve) = self.serve.take() else {
            return;
        };
        let socket = Socket::new(io);
        let mut reader = FrameReader::new(self.max_frame);
        reader.push(&early);
        drop(early);
        let served = async {
            match serve {
                Serve::Local(attachment) => serve_local(&socket, reader, attachment).await,
                Serve::Tunnel(edge) => edge.relay(&socket, reader).await,
            }
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, socket.shut_down()).await;
        };
        self.tasks.track_future(served).await;
    }
}

impl Drop for Takeover {
    fn drop(&mut self) {
        match self.serve.take() {
            Some(Serve::Local(attachment)) => transport_lost(
                attachment.connection(),
                &attachment.ending(),
                CloseReason::TransportError,
            ),
            Some(Serve::Tunnel(edge)) => edge.lost(),
            None => {}
        }
    }
}

/// A local connection's socket, until the connection closes or the attachment ends.
async fn serve_local<T>(socket: &Socket<T>, reader: FrameReader, attachment: Attachment)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let pong = Pong::default();
    let connection = attachment.connection().clone();
    let ending = attachment.ending();
    tokio::join!(
        read_frames(socket, reader, &pong, &connection, &ending),
        write_frames(socket, attachment, &pong),
    );
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
/// Pings are answered here (through the writing half), not by the session, so a Pong never
/// waits for the hub: while a frame waits for room in the session's inbound queue the reader
/// goes on reading, answering pings, and holds at most one further data frame (the socket is
/// not read past it, which is the back-pressure a flooding client gets).
async fn read_frames<T>(
    socket: &Socket<T>,
    mut reader: FrameReader,
    pong: &Pong,
    connection: &Connection,
    ending: &CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut held: Option<Inbound> = None;
    // Made once, not for each frame (a wait made anew registers and unregisters each time).
    let ended = ending.cancelled();
    tokio::pin!(ended);
    loop {
        let frame = match held.take() {
            Some(frame) => frame,
            None => {
                let message = tokio::select! {
                    () = &mut ended => return,
                    message = socket.next_message(&mut reader) => message,
                };
                match classify(message, pong, connection, ending) {
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
                () = &mut ended => return,
                message = socket.next_message(&mut reader), if held.is_none() => {
                    match classify(message, pong, connection, ending) {
                        Read::Data(frame) => held = Some(frame),
                        Read::Control => {}
                        Read::End => return,
                    }
                }
            }
        }
    }
}

/// Session -> socket: a Pong, or everything queued (up to about [`COALESCE_BYTES`]) as one
/// frame, until the attachment ends; then, if the connection closed, what is left (the Close
/// message included) and the close frame. A connection that lives on (the socket was cut or
/// replaced, the client is to resume) gets no close frame, as a network failure would give
/// none, and the attachment lets go with this half, so a client reconnecting at once finds
/// the connection free.
async fn write_frames<T>(socket: &Socket<T>, mut attachment: Attachment, pong: &Pong)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let connection = attachment.connection().clone();
    let ending = attachment.ending();
    let protocol = || frame_protocol(&connection);
    // Kept across turns: made anew at each, they would register and unregister every time.
    let pong_due = pong.rung();
    tokio::pin!(pong_due);
    let ended = ending.cancelled();
    tokio::pin!(ended);
    loop {
        let mut out = BytesMut::new();
        let last = tokio::select! {
            biased;
            () = &mut pong_due => {
                pong_due.set(pong.rung());
                if let Some(payload) = pong.take() {
                    encode_pong(&mut out, &payload);
                }
                false
            }
            batch = attachment.next_batch_unless(COALESCE_BYTES, ended.as_mut()) => match batch {
                Some(batch) => {
                    if !encode_data(&mut out, protocol(), &batch) {
                        tracing::error!("a JSON frame was not valid UTF-8");
                        return transport_lost(&connection, &ending, CloseReason::TransportError);
                    }
                    false
                }
                None if !connection.is_closed() => {
                    tracing::debug!(connection = %connection.log_id(), resumable = connection.is_resumable(), "websocket detached");
                    return;
                }
                None => {
                    for batch in coalesce(attachment.closing_frames(), COALESCE_BYTES) {
                        if !encode_data(&mut out, protocol(), &batch) {
                            tracing::error!("a JSON frame was not valid UTF-8");
                            break;
                        }
                    }
                    encode_close(&mut out, close_code(&connection));
                    true
                }
            },
        };
        if out.is_empty() {
            continue;
        }
        let write = socket.write(out.freeze());
        tokio::pin!(write);
        let written = tokio::select! {
            written = &mut write => written,
            // A write the client does not take stops when the socket is replaced (or cut) while
            // the connection lives on, so the attachment lets go at once; a closed connection's
            // last frames are still written.
            () = detached(&ending, &connection), if !last => {
                tracing::debug!(connection = %connection.log_id(), "websocket detached while writing");
                return;
            }
        };
        if let Err(err) = written {
            tracing::debug!(connection = %connection.log_id(), error = %err, "websocket write failed");
            return transport_lost(&connection, &ending, CloseReason::TransportError);
        }
        if last {
            return;
        }
    }
}

/// Resolves once the attachment ended while the connection lives on.
async fn detached(ending: &CancellationToken, connection: &Connection) {
    ending.cancelled().await;
    if connection.is_closed() {
        std::future::pending::<()>().await;
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
