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
use super::websocket::{close_code, frame_protocol, transport_lost, write};
use super::{
    begin, conflict, max_frame_bytes, unknown_connection, use_transport, ConnectionRequest,
    HubEndpoints, TransportError, COALESCE_BYTES,
};
use crate::cluster::forward::{ForwardKind, TUNNEL};
use crate::cluster::tunnel::{TunnelEnd, TunnelEvent, TunnelSender};
use crate::connection::{coalesce, Attachment, CloseReason, Connection, Inbound, TransportKind};
use crate::protocol::HubProtocol;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the edge waits, after the client's close frame, for the owner's answer (the
/// connection's Close message and close code) before it drops the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The edge: asks the owner to attach a tunnel, then upgrades and relays the socket.
pub(super) async fn connect(
    req: &HttpRequest,
    body: web::Payload,
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
    let (response, session, stream) = match actix_ws::handle(req, body) {
        Ok(upgraded) => upgraded,
        Err(err) => {
            end.sender().send(TunnelEvent::Lost);
            return Err(TransportError::WebSocketHandshake(err.to_string()));
        }
    };
    let max_frame = max_frame_bytes(state);
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    let done = state.shutdown.child_token();
    actix_web::rt::spawn(state.tasks.track_future(relay(stream, session, end, done)));
    Ok(response)
}

async fn relay(
    stream: actix_ws::AggregatedMessageStream,
    session: actix_ws::Session,
    mut end: TunnelEnd,
    done: CancellationToken,
) {
    let to_owner = end.sender();
    tokio::join!(
        socket_to_owner(stream, session.clone(), &to_owner, &done),
        owner_to_socket(session, &mut end, &to_owner, &done),
    );
}

/// Client -> owner, until either side ends.
async fn socket_to_owner(
    mut stream: actix_ws::AggregatedMessageStream,
    mut session: actix_ws::Session,
    to_owner: &TunnelSender,
    done: &CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = done.cancelled() => return,
            message = stream.next() => message,
        };
        let event = match message {
            Some(Ok(AggregatedMessage::Text(text))) => TunnelEvent::Text(text.into_bytes()),
            Some(Ok(AggregatedMessage::Binary(bytes))) => TunnelEvent::Binary(bytes),
            Some(Ok(AggregatedMessage::Ping(payload))) => {
                let _ = session.pong(&payload).await;
                continue;
            }
            Some(Ok(AggregatedMessage::Pong(_))) => continue,
            Some(Ok(AggregatedMessage::Close(_))) => TunnelEvent::Closed(CloseCode::Normal.into()),
            Some(Err(actix_ws::ProtocolError::Overflow)) => {
                TunnelEvent::Closed(CloseCode::Size.into())
            }
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
async fn owner_to_socket(
    mut session: actix_ws::Session,
    end: &mut TunnelEnd,
    to_owner: &TunnelSender,
    done: &CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = done.cancelled() => None,
            event = end.recv() => event,
        };
        let written = match event {
            Some(TunnelEvent::Text(text)) => write(&mut session, HubProtocol::Json, text).await,
            Some(TunnelEvent::Binary(bytes)) => {
                write(&mut session, HubProtocol::MessagePack, bytes).await
            }
            Some(TunnelEvent::Closed(code)) => {
                done.cancel();
                let _ = session.close(Some(CloseCode::from(code).into())).await;
                return;
            }
            Some(TunnelEvent::Lost) | None => false,
        };
        if !written {
            to_owner.send(TunnelEvent::Lost);
            done.cancel();
            return;
        }
    }
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
