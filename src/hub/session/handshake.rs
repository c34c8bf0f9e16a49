//! The SignalR handshake: the first message of a connection names its protocol and version.

use super::{Inbound, SessionLimits};
use crate::connection::{CloseReason, Connection};
use crate::protocol::handshake::{self, HandshakeDecoder};
use crate::protocol::Handshake;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::sleep;

pub(super) async fn perform_handshake(
    connection: &Connection,
    inbound: &mut mpsc::Receiver<Inbound>,
    limits: &SessionLimits,
    text_only_transport: bool,
) -> Result<Handshake, CloseReason> {
    let mut decoder = HandshakeDecoder::new(limits.max_message_bytes);
    if text_only_transport {
        decoder = decoder.text_only_transport();
    }
    let deadline = sleep(limits.handshake_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = connection.closed() => {
                return Err(connection.close_reason().cloned().unwrap_or(CloseReason::Shutdown));
            }
            _ = &mut deadline => {
                send_handshake_error(connection, handshake::HANDSHAKE_CANCELED).await;
                return Err(CloseReason::HandshakeTimeout);
            }
            frame = inbound.recv() => {
                let bytes = match frame {
                    Some(Inbound::Text(bytes) | Inbound::Binary(bytes)) => bytes,
                    Some(Inbound::Resumed) => continue,
                    None => return Err(CloseReason::ClientClosed),
                };
                match decoder.feed(&bytes) {
                    Ok(Some(handshake)) => return Ok(handshake),
                    Ok(None) => {}
                    Err(err) => {
                        tracing::debug!(connection = %connection.log_id(), error = %err, "handshake refused");
                        send_handshake_error(connection, &err.response_text(limits.detailed_errors)).await;
                        return Err(CloseReason::HandshakeFailed);
                    }
                }
            }
        }
    }
}

async fn send_handshake_error(connection: &Connection, text: &str) {
    let mut out = Vec::new();
    handshake::encode_response(Some(text), &mut out);
    let _ = connection.send(Bytes::from(out)).await;
}
