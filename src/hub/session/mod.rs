//! One hub session per connection, whatever the transport: the handshake, then a single
//! `select!` loop over inbound frames, finished invocations, the keep-alive tick, the client
//! timeout, the token's expiry and cancellation. The loop ends with a [`CloseReason`]; the
//! caller closes the connection with it, once.
//!
//! The session outlives transports: long polling brings a new request for every poll and a
//! WebSocket with stateful reconnect may come back after a drop, all feeding the same session.
//! With stateful reconnect on, the session also numbers the client's trackable messages
//! ([`ReceivedSequence`]), skips the ones a client resends after a resume, acknowledges what
//! arrived every second, and hands the client's Acks to the connection's replay buffer.

mod dispatch;
mod handshake;
mod refusal;
mod streams;
mod timers;

pub use streams::OpenUploads;

use super::call::Call;
use super::Hub;
use crate::auth::issue::unix_now;
pub use crate::connection::Inbound;
use crate::connection::{CloseReason, Connection, InboundReceiver, ReceivedSequence};
use crate::protocol::handshake as handshake_response;
use crate::protocol::{
    CompletionResult, HubMessage, HubMessageDecoder, HubProtocol, TransferFormat,
};
use crate::settings::Settings;
use bytes::Bytes;
use dispatch::{Finished, Invocations};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;
use timers::{Due, SessionTimers};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Limits and timings a session enforces (from `[hub]` and `[jwt]` settings).
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub keep_alive: Duration,
    pub client_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_parallel_invocations: usize,
    pub max_streams: usize,
    pub detailed_errors: bool,
    pub expiry_leeway_secs: i64,
    /// Close the connection when its token expires (`hub.close_on_expiry`).
    pub close_on_expiry: bool,
    /// Items buffered per client-to-server stream (`hub.stream_buffer_items`).
    pub upload_buffer: usize,
    /// Bytes of unacknowledged messages kept for replay under stateful reconnect.
    pub replay_buffer_bytes: usize,
}

impl SessionLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        let hub = &settings.hub;
        Self {
            keep_alive: Duration::from_secs(hub.keep_alive_interval_secs),
            client_timeout: Duration::from_secs(hub.client_timeout_secs),
            handshake_timeout: Duration::from_secs(hub.handshake_timeout_secs),
            max_message_bytes: hub.max_message_bytes,
            max_parallel_invocations: hub.max_parallel_invocations,
            max_streams: hub.max_streams_per_connection,
            detailed_errors: hub.detailed_errors,
            expiry_leeway_secs: i64::try_from(settings.jwt.leeway_secs).unwrap_or(i64::MAX),
            close_on_expiry: hub.close_on_expiry,
            upload_buffer: hub.stream_buffer_items,
            replay_buffer_bytes: settings.transports.stateful_reconnect_buffer_bytes,
        }
    }
}

/// Runs the session to its end and returns why it ended. The caller closes the connection.
pub async fn run_session(
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    mut inbound: InboundReceiver,
    limits: SessionLimits,
    text_only_transport: bool,
) -> CloseReason {
    // Boxed, as the frame handling below: a task is as large as the largest state of its
    // future, and an idle session should not carry these while it waits.
    let handshake = match Box::pin(handshake::perform_handshake(
        &connection,
        &mut inbound,
        &limits,
        text_only_transport,
    ))
    .await
    {
        Ok(handshake) => handshake,
        Err(reason) => {
            hub.services.metrics.handshake_failed(reason.code());
            return reason;
        }
    };
    connection.set_protocol(handshake.protocol);
    let metrics = &hub.services.metrics;
    connection.set_traffic(metrics.outbound(&hub.name, handshake.protocol.name()));
    if connection
        .send(Bytes::from_static(handshake_response::SUCCESS_RESPONSE))
        .await
        .is_err()
    {
        return CloseReason::TransportError;
    }
    let stateful =
        connection.start_stateful_reconnect(handshake.version, limits.replay_buffer_bytes);
    if let Err(err) = hub.lifetime.add_connection(connection.clone()).await {
        tracing::error!(error = %err, "cannot register a connection with its hub");
        return CloseReason::ProtocolError("the hub could not accept the connection".into());
    }
    let transport = connection.transport().map_or("none", |t| t.name());
    metrics.connected(&hub.name, transport, handshake.protocol.name());
    if let Some(hook) = hub.on_connected() {
        hook(Call::new(connection.clone(), hub.lifetime.clone())).await;
    }

    let mut session = Session {
        decoder: handshake.protocol.decoder(limits.max_message_bytes),
        protocol: handshake.protocol,
        hub: hub.clone(),
        connection: connection.clone(),
        limits,
        tasks: JoinSet::new(),
        running: Invocations::new(hub.services.open_uploads.clone()),
        received: stateful.then(ReceivedSequence::default),
        received_counters: metrics.inbound(&hub.name, handshake.protocol.name()),
    };
    let reason = match Box::pin(session.on_bytes(&handshake.remaining)).await {
        Some(reason) => reason,
        None => session.run(&mut inbound).await,
    };
    // Running invocations end with the session (JoinSet aborts them when dropped).
    drop(session);
    hub.lifetime.remove_connection(&connection).await;
    if let Some(hook) = hub.on_disconnected() {
        hook(Call::new(connection.clone(), hub.lifetime.clone())).await;
    }
    reason
}

/// When the token behind the connection stops being valid.
fn expiry_instant(connection: &Connection, leeway_secs: i64) -> Instant {
    let remaining = connection
        .expires_at()
        .saturating_add(leeway_secs)
        .saturating_sub(unix_now());
    Instant::now() + Duration::from_secs(u64::try_from(remaining).unwrap_or(0))
}

/// Far enough away to never fire: the expiry timer when expiry does not close connections.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl SessionLimits {
    /// When this connection must close for expiry (never, if expiry does not close).
    fn expiry_deadline(&self, connection: &Connection) -> Instant {
        if self.close_on_expiry {
            expiry_instant(connection, self.expiry_leeway_secs)
        } else {
            Instant::now() + NEVER
        }
    }

    /// Whether this connection must close for expiry now: what `expiry_deadline(..) <=
    /// Instant::now()` says, without the clocks' round trip, for the check before each call.
    fn expired(&self, connection: &Connection) -> bool {
        self.close_on_expiry
            && connection
                .expires_at()
                .saturating_add(self.expiry_leeway_secs)
                <= unix_now()
    }
}

struct Session {
    decoder: HubMessageDecoder,
    protocol: HubProtocol,
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    limits: SessionLimits,
    tasks: JoinSet<Finished>,
    /// Running invocations and open streams.
    running: Invocations,
    /// The client's trackable messages, when stateful reconnect is on.
    received: Option<ReceivedSequence>,
    /// Messages and bytes received, by hub and protocol.
    received_counters: (Counter, Counter),
}

impl Session {
    async fn run(&mut self, inbound: &mut InboundReceiver) -> CloseReason {
        let connection = self.connection.clone();
        let mut timers = SessionTimers::start(
            &self.limits,
            self.limits.expiry_deadline(&connection),
            connection.has_inherent_keep_alive(),
            self.received.is_some(),
        );
        // Made once, not each turn of the loop: a wait made anew registers with its `Notify`
        // when polled and unregisters when dropped, at every frame.
        let closed = connection.closed();
        tokio::pin!(closed);
        let expiry_changed = connection.expiry_changed();
        tokio::pin!(expiry_changed);
        loop {
            tokio::select! {
                biased;
                () = &mut closed => {
                    return connection.close_reason().cloned().unwrap_or(CloseReason::Shutdown);
                }
                () = &mut expiry_changed => {
                    expiry_changed.set(connection.expiry_changed());
                    timers.expire_at(self.limits.expiry_deadline(&connection));
                }
                due = timers.next() => match due {
                    Due::Expiry => {
                        // A refresh may have moved the expiry since the timer was set.
                        let at = self.limits.expiry_deadline(&connection);
                        if at <= Instant::now() {
                            return CloseReason::Expired;
                        }
                        timers.expire_at(at);
                    }
                    Due::ClientSilent => {
                        // While the parallel-invocation limit holds reading back, the client's
                        // pings wait unread in the transport: its silence is ours, not a timeout.
                        if self.running.parallel < self.limits.max_parallel_invocations {
                            return CloseReason::ClientTimeout;
                        }
                        timers.heard_from_client();
                    }
                    Due::Ping => {
                        // A full queue means the client is not reading; the ping can wait.
                        let _ = connection.try_send(Bytes::from_static(self.protocol.ping_frame()));
                    }
                    Due::Ack => self.acknowledge(),
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(finished) = done {
                        self.running.finished(finished);
                    }
                }
                frame = inbound.recv(), if self.running.parallel < self.limits.max_parallel_invocations => {
                    if let Some(reason) = self.on_frame(frame, &mut timers).await {
                        return reason;
                    }
                    // Frames that arrived together are handled together, not one loop turn
                    // (and one round of the other branches' wake-ups) each: a client's
                    // pipelined calls, say a burst of broadcasts, go out as one burst. The
                    // inbound queue bounds the run, and the limit still holds reading back.
                    while self.running.parallel < self.limits.max_parallel_invocations
                        && !connection.is_closed()
                    {
                        let Some(frame) = inbound.try_recv() else { break };
                        if let Some(reason) = self.on_frame(frame, &mut timers).await {
                            return reason;
                        }
                    }
                }
            }
        }
    }

    /// One frame from the transport.
    async fn on_frame(
        &mut self,
        frame: Inbound,
        timers: &mut SessionTimers,
    ) -> Option<CloseReason> {
        timers.heard_from_client();
        let (bytes, format) = match frame {
            Inbound::Text(bytes) => (bytes, TransferFormat::Text),
            Inbound::Binary(bytes) => (bytes, TransferFormat::Binary),
            Inbound::Resumed => {
                self.resumed();
                return None;
            }
        };
        if format != self.protocol.transfer_format() {
            return Some(CloseReason::ProtocolError(format!(
                "A {format} frame arrived on a connection using the '{}' protocol.",
                self.protocol.name()
            )));
        }
        // Boxed: handling a message (dispatch, envelopes, replies) nests many futures, and a
        // task is as large as the largest state of its future, which would make every idle
        // session task carry them (about 2 KiB) while it waits for the next frame.
        Box::pin(self.on_bytes(&bytes)).await
    }

    /// A WebSocket came back after a drop: partial data of the lost one is void, and the
    /// client's Sequence message comes before anything else counts.
    fn resumed(&mut self) {
        self.decoder = self.protocol.decoder(self.limits.max_message_bytes);
        if let Some(received) = &mut self.received {
            received.resumed();
        }
    }

    /// Acknowledges the client's messages that arrived since the last Ack.
    fn acknowledge(&mut self) {
        let Some(sequence_id) = self.received.as_mut().and_then(ReceivedSequence::ack_due) else {
            return;
        };
        match self
            .protocol
            .encode_to_bytes(&HubMessage::Ack { sequence_id })
        {
            // Like a ping: a full queue means the client is not reading.
            Ok(ack) => {
                let _ = self.connection.try_send(ack);
            }
            Err(err) => tracing::error!(error = %err, "cannot encode an Ack message"),
        }
    }
}

async fn reply(
    connection: &Connection,
    protocol: HubProtocol,
    invocation_id: &str,
    result: CompletionResult,
) {
    send_message(
        connection,
        protocol,
        &HubMessage::completion(invocation_id, result),
    )
    .await;
}

/// Encodes and queues one message of this connection's own; false if the connection is gone.
async fn send_message(
    connection: &Connection,
    protocol: HubProtocol,
    message: &HubMessage,
) -> bool {
    match protocol.encode_to_bytes(message) {
        Ok(bytes) => connection.send(bytes).await.is_ok(),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode a hub message");
            false
        }
    }
}

/// A connection of `alice` (role `user`) on the `home` hub, for the unit tests of this module.
#[cfg(test)]
fn test_connection() -> Arc<Connection> {
    Connection::for_tests(i64::MAX)
}
