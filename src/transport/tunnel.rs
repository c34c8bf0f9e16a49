//! A stateful-reconnect WebSocket that reaches another node than the one holding its
//! connection: the node it reached (the edge) keeps the socket and tunnels its frames through
//! the backplane ([`crate::cluster::tunnel`]) to the connection's node (the owner), which
//! attaches the tunnel to the connection as it would attach a local socket
//! ([`Connection::attach_replacing`]), so replay and resume work unchanged.
//!
//! Either end going away ends the other: the client's close frame closes the connection, a
//! dropped socket detaches it (it waits for the client to come back); the connection closing
//! closes the socket with the close frame a local socket gets, the attachment ending (replaced,
//! or the tunnel's queue full) drops the socket as a network failure would.

use super::forward::{self, RemoteRequest};
use super::websocket::frames::{
    encode_close, encode_data, encode_pong, FrameReader, ReadError, Received,
};
use super::websocket::socket::{Pong, Socket};
use super::websocket::{
    close_code, frame_protocol, switching_protocols, take_over, transport_lost, Serve,
};
use super::{
    begin, conflict, unknown_connection, use_transport, ConnectionRequest, HubEndpoints,
    TransportError, COALESCE_BYTES,
};
use crate::cluster::forward::{ForwardKind, TUNNEL};
use crate::cluster::tunnel::{TunnelEnd, TunnelEvent, TunnelSender};
use crate::connection::{coalesce, Attachment, CloseReason, Connection, Inbound, TransportKind};
use crate::protocol::HubProtocol;
use actix_codec::{AsyncRead, AsyncWrite};
use actix_http::ws::CloseCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the edge waits, after the client's close frame, for the owner's answer (the
/// connection's Close message and close code) before it drops the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The edge: asks the owner to attach a tunnel, then upgrades; the socket is relayed once the
/// upgrade service hands it over ([`Edge::relay`]).
pub(super) async fn connect(
    req: &HttpRequest,
    state: &HubEndpoints,
    remote: RemoteRequest,
) -> Result<HttpResponse, TransportError> {
    let forwarder = state.forwarder.as_ref().ok_or_else(unknown_connection)?;
    let end = forwarder
        .tunnels()
        .open_edge(&remote.owner)
        .map_err(|_| TransportError::ClusterUnavailable)?;
    let id = Bytes::copy_from_slice(&end.id().to_be_bytes());
    let answer = forward::answer(state, remote, ForwardKind::Tunnel, id).await?;
    let opened = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == TUNNEL.as_bytes());
    if !opened {
        return Ok(answer);
    }
    let edge = Edge {
        end,
        done: state.shutdown.child_token(),
    };
    match switching_protocols(req) {
        Ok(response) => Ok(take_over(response, state, Serve::Tunnel(edge))),
        Err(err) => {
            edge.lost();
            Err(err)
        }
    }
}

/// The edge's end of a tunnel whose owner attached it, waiting for its socket.
pub(super) struct Edge {
    end: TunnelEnd,
    /// Cancelled when either side ends, and at shutdown.
    done: CancellationToken,
}

impl Edge {
    /// The socket never came: the owner detaches the tunnel.
    pub(super) fn lost(&self) {
        self.end.sender().send(TunnelEvent::Lost);
    }

    /// Relays `socket` and the tunnel until either ends.
    pub(super) async fn relay<T>(mut self, socket: &Socket<T>, reader: FrameReader)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let to_owner = self.end.sender();
        let pong = Pong::default();
        tokio::join!(
            socket_to_owner(socket, reader, &pong, &to_owner, &self.done),
            owner_to_socket(socket, &pong, &mut self.end, &to_owner, &self.done),
        );
    }
}

/// Client -> owner, until either side ends.
async fn socket_to_owner<T>(
    socket: &Socket<T>,
    mut reader: FrameReader,
    pong: &Pong,
    to_owner: &TunnelSender,
    done: &CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = tokio::select! {
            _ = done.cancelled() => return,
            message = socket.next_message(&mut reader) => message,
        };
        let event = match message {
            Some(Ok(Received::Text(text))) => TunnelEvent::Text(text),
            Some(Ok(Received::Binary(bytes))) => TunnelEvent::Binary(bytes),
            Some(Ok(Received::Ping(payload))) => {
                pong.answer(payload);
                continue;
            }
            Some(Ok(Received::Pong)) => continue,
            Some(Ok(Received::Close)) => TunnelEvent::Closed(CloseCode::Normal.into()),
            Some(Err(ReadError::TooLarge)) => TunnelEvent::Closed(CloseCode::Size.into()),
            _ => TunnelEvent::Lost,
        };
        let closing = matches!(event, TunnelEvent::Closed(_));
        let data = matches!(event, TunnelEvent::Text(_) | TunnelEvent::Binary(_));
        let sent = to_owner.send(event);
        if sent && data {
            continue;
        }
        if !sent {
            to_owner.send(TunnelEvent::Lost);
        } else if closing {
            // The owner answers with the connection's Close (see `owner_to_socket`).
            let _ = tokio::time::timeout(CLOSE_GRACE, done.cancelled()).await;
        }
        done.cancel();
        return;
    }
}

/// Owner -> client, until either side ends. The socket is closed with a close frame only when
/// the connection closed; otherwise it is dropped.
async fn owner_to_socket<T>(
    socket: &Socket<T>,
    pong: &Pong,
    end: &mut TunnelEnd,
    to_owner: &TunnelSender,
    done: &CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = tokio::select! {
            biased;
            _ = done.cancelled() => Next::Event(None),
            payload = pong.due() => Next::Pong(payload),
            event = end.recv() => Next::Event(event),
        };
        let mut out = BytesMut::new();
        let mut closed = false;
        let encoded = match next {
            Next::Pong(Some(payload)) => {
                encode_pong(&mut out, &payload);
                true
            }
            Next::Pong(None) => continue,
            Next::Event(Some(TunnelEvent::Text(text))) => {
                encode_data(&mut out, HubProtocol::Json, &text)
            }
            Next::Event(Some(TunnelEvent::Binary(bytes))) => {
                encode_data(&mut out, HubProtocol::MessagePack, &bytes)
            }
            Next::Event(Some(TunnelEvent::Closed(code))) => {
                done.cancel();
                encode_close(&mut out, CloseCode::from(code));
                closed = true;
                true
            }
            Next::Event(Some(TunnelEvent::Lost) | None) => false,
        };
        let written = encoded && socket.write(out.freeze()).await.is_ok();
        if closed {
            return;
        }
        if !written {
            to_owner.send(TunnelEvent::Lost);
            done.cancel();
            return;
        }
    }
}

/// What the edge writes next.
enum Next {
    /// A Ping came: its payload, to answer.
    Pong(Option<Bytes>),
    /// From the owner; `None` once the tunnel or the relay ended.
    Event(Option<TunnelEvent>),
}

/// The owner: attaches tunnel `body` (its id) from node `from` to the connection, which must
/// be a resumable WebSocket one; else the answer a second socket gets here.
pub(super) async fn attach(
    state: &HubEndpoints,
    from: &str,
    local: ConnectionRequest,
    body: &[u8],
) -> Result<HttpResponse, TransportError> {
    let connection = local.connection.clone();
    use_transport(state, &connection, TransportKind::WebSockets)?;
    if !connection.is_resumable() || !connection.accepts_transport() {
        return Err(conflict("WebSocket"));
    }
    let id = <[u8; 8]>::try_from(body)
        .map(u64::from_be_bytes)
        .map_err(|_| unknown_connection())?;
    let forwarder = state.forwarder.as_ref().ok_or_else(unknown_connection)?;
    let end = forwarder
        .tunnels()
        .open_owner(from, id)
        .map_err(|_| TransportError::ClusterUnavailable)?;
    let attachment = connection
        .attach_replacing()
        .await
        .map_err(|_| conflict("WebSocket"))?;
    begin(state, local.hub, &attachment).await;
    tracing::debug!(connection = %connection.log_id(), edge = %from, "websocket tunnelled from another node");
    actix_web::rt::spawn(state.tasks.track_future(serve(end, attachment)));
    Ok(HttpResponse::Ok().content_type(TUNNEL).finish())
}

/// One tunnelled socket on the owner, from attach to detach or close.
async fn serve(mut end: TunnelEnd, mut attachment: Attachment) {
    let connection = attachment.connection().clone();
    let ending = attachment.ending();
    let to_edge = end.sender();
    tokio::join!(
        edge_to_connection(&mut end, &connection, &ending),
        connection_to_edge(&to_edge, &mut attachment),
    );
    if connection.is_closed() {
        let protocol = frame_protocol(&connection);
        for batch in coalesce(attachment.closing_frames(), COALESCE_BYTES) {
            to_edge.send(data(protocol, batch));
        }
        to_edge.send(TunnelEvent::Closed(close_code(&connection).into()));
    } else {
        tracing::debug!(connection = %connection.log_id(), "websocket tunnel detached");
        drop(attachment);
        to_edge.send(TunnelEvent::Lost);
    }
}

fn data(protocol: HubProtocol, bytes: Bytes) -> TunnelEvent {
    match protocol {
        HubProtocol::Json => TunnelEvent::Text(bytes),
        HubProtocol::MessagePack => TunnelEvent::Binary(bytes),
    }
}

/// Edge -> session, until the attachment ends or the edge goes.
async fn edge_to_connection(
    end: &mut TunnelEnd,
    connection: &Connection,
    ending: &CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = ending.cancelled() => return,
            event = end.recv() => event,
        };
        let frame = match event {
            Some(TunnelEvent::Text(text)) => Inbound::Text(text),
            Some(TunnelEvent::Binary(bytes)) => Inbound::Binary(bytes),
            Some(TunnelEvent::Closed(code)) if code == u16::from(CloseCode::Size) => {
                return connection.close(CloseReason::MessageTooLarge);
            }
            Some(TunnelEvent::Closed(_)) => return connection.close(CloseReason::ClientClosed),
            Some(TunnelEvent::Lost) | None => {
                return transport_lost(connection, ending, CloseReason::ClientClosed);
            }
        };
        tokio::select! {
            _ = ending.cancelled() => return,
            delivered = connection.receive(frame) => if delivered.is_err() { return },
        }
    }
}

/// Attachment -> edge, until the attachment ends.
async fn connection_to_edge(to_edge: &TunnelSender, attachment: &mut Attachment) {
    let connection = attachment.connection().clone();
    while let Some(batch) = attachment.next_batch(COALESCE_BYTES).await {
        if !to_edge.send(data(frame_protocol(&connection), batch)) {
            transport_lost(
                &connection,
                &attachment.ending(),
                CloseReason::TransportError,
            );
            return;
        }
    }
}
