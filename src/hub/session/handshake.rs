//! The SignalR handshake: the first message of a connection names its protocol and version.

use super::{Inbound, SessionLimits};
use crate::connection::{CloseReason, Connection, InboundReceiver};
use crate::protocol::handshake::{self, HandshakeDecoder};
use crate::protocol::Handshake;
use bytes::Bytes;
use tokio::time::sleep;

pub(super) async fn perform_handshake(
    connection: &Connection,
    inbound: &mut InboundReceiver,
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
                    Inbound::Text(bytes) | Inbound::Binary(bytes) => bytes,
                    Inbound::Resumed => continue,
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

#[cfg(test)]
mod tests {
    use super::super::test_connection;
    use super::*;
    use crate::protocol::HubProtocol;
    use crate::settings::Settings;
    use std::time::Duration;

    /// Longer than any of these tests waits.
    const LONG: Duration = Duration::from_secs(30);

    /// Runs a handshake over `frames` (the queue then stays open, as a silent client's does);
    /// returns its result and the text of what the server queued, if anything.
    async fn handshake(
        frames: &[&[u8]],
        text_only: bool,
        timeout: Duration,
    ) -> (Result<Handshake, CloseReason>, Option<String>) {
        let connection = test_connection();
        let mut limits = SessionLimits::from_settings(&Settings::default());
        limits.handshake_timeout = timeout;
        let mut inbound = connection.take_inbound().unwrap();
        for frame in frames {
            let sent = connection
                .receive(Inbound::Text(Bytes::copy_from_slice(frame)))
                .await;
            assert!(sent.is_ok());
        }
        let result = perform_handshake(&connection, &mut inbound, &limits, text_only).await;
        let queued = connection
            .try_recv_outbound()
            .map(|frame| String::from_utf8_lossy(&frame).into_owned());
        (result, queued)
    }

    #[tokio::test]
    async fn a_request_split_over_frames_completes_the_handshake_without_an_answer() {
        let (result, queued) = handshake(
            &[b"{\"protocol\":\"js", b"on\",\"version\":1}\x1e"],
            false,
            LONG,
        )
        .await;
        let handshake = result.map_err(|reason| reason.code()).map(|h| h.protocol);
        assert_eq!(handshake, Ok(HubProtocol::Json));
        // The session answers success itself, once it has registered the connection.
        assert_eq!(queued, None);
    }

    #[tokio::test]
    async fn an_unknown_protocol_is_refused_with_asp_net_core_s_text() {
        let (result, queued) =
            handshake(&[b"{\"protocol\":\"xml\",\"version\":1}\x1e"], false, LONG).await;
        assert!(matches!(result, Err(CloseReason::HandshakeFailed)));
        assert_eq!(
            queued.as_deref(),
            Some("{\"error\":\"The protocol 'xml' is not supported.\"}\x1e")
        );
    }

    #[tokio::test]
    async fn a_binary_protocol_on_a_text_only_transport_is_refused() {
        let request: &[u8] = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e";
        let (result, queued) = handshake(&[request], true, LONG).await;
        assert!(matches!(result, Err(CloseReason::HandshakeFailed)));
        let queued = queued.unwrap_or_default();
        assert!(
            queued.contains("does not support 'Binary' transfer format"),
            "{queued}"
        );
        // The same request on a transport that carries binary frames is fine.
        let (result, _) = handshake(&[request], false, LONG).await;
        assert!(result.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_told_the_handshake_was_canceled() {
        let timeout = Duration::from_secs(15);
        let started = tokio::time::Instant::now();
        let (result, queued) = handshake(&[], false, timeout).await;
        assert_eq!(started.elapsed(), timeout);
        assert!(matches!(result, Err(CloseReason::HandshakeTimeout)));
        assert_eq!(
            queued.as_deref(),
            Some("{\"error\":\"Handshake was canceled.\"}\x1e")
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_before_its_handshake_closed_the_session() {
        let connection = test_connection();
        let limits = SessionLimits::from_settings(&Settings::default());
        let mut inbound = connection.take_inbound().unwrap();
        connection.close(CloseReason::ClientClosed);
        let result = perform_handshake(&connection, &mut inbound, &limits, false).await;
        assert!(matches!(result, Err(CloseReason::ClientClosed)));
    }
}
