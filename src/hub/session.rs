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

use super::call::Call;
use super::method::{Handler, HubError, Method};
use super::Hub;
use crate::auth::issue::unix_now;
pub use crate::connection::Inbound;
use crate::connection::{CloseReason, Connection, ReceivedSequence};
use crate::protocol::handshake::{self, HandshakeDecoder};
use crate::protocol::{
    CompletionResult, Handshake, HubMessage, HubMessageDecoder, HubProtocol, ProtocolError,
    TransferFormat,
};
use crate::settings::Settings;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// How often the server acknowledges the client's messages under stateful reconnect (the
/// official clients and ASP.NET Core use one second).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Items buffered per client-to-server stream.
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
            upload_buffer: 16,
            replay_buffer_bytes: settings.transports.stateful_reconnect_buffer_bytes,
        }
    }
}

/// Client-to-server streams open on this server, over every session: `signet_upload_streams`
/// in `/metrics`, and how tests see that finished uploads leave nothing behind.
#[derive(Debug, Default)]
pub struct OpenUploads(AtomicUsize);

impl OpenUploads {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One session's client-to-server streams by stream id, counted in [`OpenUploads`].
struct Uploads {
    senders: HashMap<String, Upload>,
    /// Numbers each registration, so an ending invocation frees its own streams and never a
    /// later invocation's stream that reuses the id after the client completed the first.
    registered: u64,
    open: Arc<OpenUploads>,
}

struct Upload {
    registration: u64,
    sender: mpsc::Sender<Value>,
}

impl Uploads {
    fn new(open: Arc<OpenUploads>) -> Self {
        Self {
            senders: HashMap::new(),
            registered: 0,
            open,
        }
    }

    fn get(&self, stream_id: &str) -> Option<&mpsc::Sender<Value>> {
        self.senders.get(stream_id).map(|upload| &upload.sender)
    }

    fn contains(&self, stream_id: &str) -> bool {
        self.senders.contains_key(stream_id)
    }

    /// Registers a stream; returns its registration, for [`Self::remove_registered`].
    fn insert(&mut self, stream_id: String, sender: mpsc::Sender<Value>) -> u64 {
        self.registered += 1;
        let registration = self.registered;
        let upload = Upload {
            registration,
            sender,
        };
        if self.senders.insert(stream_id, upload).is_none() {
            self.open.0.fetch_add(1, Ordering::Relaxed);
        }
        registration
    }

    /// Ends a stream: dropping the sender ends the method's receiver.
    fn remove(&mut self, stream_id: &str) {
        if self.senders.remove(stream_id).is_some() {
            self.open.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Ends a stream if it is still the one `registration` names.
    fn remove_registered(&mut self, stream_id: &str, registration: u64) {
        if self
            .senders
            .get(stream_id)
            .is_some_and(|upload| upload.registration == registration)
        {
            self.remove(stream_id);
        }
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        self.open.0.fetch_sub(self.senders.len(), Ordering::Relaxed);
    }
}

/// What an invocation task reports when it ends.
struct Finished {
    invocation_id: Option<String>,
    counted: Slot,
    /// The client-to-server streams the invocation took: they end with it, whichever way it
    /// ended (result, error, a bad item), so a client that never completes them leaks nothing.
    stream_ids: Vec<(String, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A plain invocation: counts against `max_parallel_invocations`.
    Parallel,
    /// A streaming invocation or upload: counts against `max_streams`.
    Stream,
}

/// Runs the session to its end and returns why it ended. The caller closes the connection.
pub async fn run_session(
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    mut inbound: mpsc::Receiver<Inbound>,
    limits: SessionLimits,
    text_only_transport: bool,
) -> CloseReason {
    let handshake =
        match perform_handshake(&connection, &mut inbound, &limits, text_only_transport).await {
            Ok(handshake) => handshake,
            Err(reason) => return reason,
        };
    connection.set_protocol(handshake.protocol);
    if connection
        .send(Bytes::from_static(handshake::SUCCESS_RESPONSE))
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
        active_ids: HashSet::new(),
        streams: HashMap::new(),
        uploads: Uploads::new(hub.services.open_uploads.clone()),
        parallel: 0,
        open_streams: 0,
        received: stateful.then(ReceivedSequence::default),
    };
    let reason = match session.on_bytes(&handshake.remaining).await {
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

async fn perform_handshake(
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
}

struct Session {
    decoder: HubMessageDecoder,
    protocol: HubProtocol,
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    limits: SessionLimits,
    tasks: JoinSet<Finished>,
    /// Invocation ids of running invocations (a reused id is refused).
    active_ids: HashSet<String>,
    /// Server-to-client streams, cancelled by `CancelInvocation`.
    streams: HashMap<String, CancellationToken>,
    /// Client-to-server streams by stream id.
    uploads: Uploads,
    parallel: usize,
    open_streams: usize,
    /// The client's trackable messages, when stateful reconnect is on.
    received: Option<ReceivedSequence>,
}

impl Session {
    async fn run(&mut self, inbound: &mut mpsc::Receiver<Inbound>) -> CloseReason {
        let connection = self.connection.clone();
        let mut keep_alive = tokio::time::interval_at(
            Instant::now() + self.limits.keep_alive,
            self.limits.keep_alive,
        );
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let client_deadline = sleep(self.limits.client_timeout);
        tokio::pin!(client_deadline);
        let expiry = sleep_until(self.limits.expiry_deadline(&connection));
        tokio::pin!(expiry);
        // Long polling keeps itself alive: its clients send no pings and expect none.
        let inherent_keep_alive = connection.has_inherent_keep_alive();
        let mut acks = tokio::time::interval_at(Instant::now() + ACK_INTERVAL, ACK_INTERVAL);
        acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = connection.closed() => {
                    return connection.close_reason().cloned().unwrap_or(CloseReason::Shutdown);
                }
                _ = &mut expiry => {
                    // A refresh may have moved the expiry since the timer was set.
                    let at = self.limits.expiry_deadline(&connection);
                    if at <= Instant::now() {
                        return CloseReason::Expired;
                    }
                    expiry.as_mut().reset(at);
                }
                _ = connection.expiry_changed() => {
                    expiry.as_mut().reset(self.limits.expiry_deadline(&connection));
                }
                _ = &mut client_deadline, if !inherent_keep_alive => {
                    // While the parallel-invocation limit holds reading back, the client's pings
                    // wait unread in the transport: its silence is ours, not a timeout.
                    if self.parallel < self.limits.max_parallel_invocations {
                        return CloseReason::ClientTimeout;
                    }
                    client_deadline.as_mut().reset(Instant::now() + self.limits.client_timeout);
                }
                _ = keep_alive.tick(), if !inherent_keep_alive => {
                    // A full queue means the client is not reading; the ping can wait.
                    let _ = connection.try_send(Bytes::from_static(self.protocol.ping_frame()));
                }
                _ = acks.tick(), if self.received.is_some() => self.acknowledge(),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(finished) = done {
                        self.finished(finished);
                    }
                }
                frame = inbound.recv(), if self.parallel < self.limits.max_parallel_invocations => {
                    let Some(frame) = frame else { return CloseReason::ClientClosed };
                    client_deadline.as_mut().reset(Instant::now() + self.limits.client_timeout);
                    let (bytes, format) = match frame {
                        Inbound::Text(bytes) => (bytes, TransferFormat::Text),
                        Inbound::Binary(bytes) => (bytes, TransferFormat::Binary),
                        Inbound::Resumed => {
                            self.resumed();
                            continue;
                        }
                    };
                    if format != self.protocol.transfer_format() {
                        return CloseReason::ProtocolError(format!(
                            "A {format} frame arrived on a connection using the '{}' protocol.",
                            self.protocol.name()
                        ));
                    }
                    if let Some(reason) = self.on_bytes(&bytes).await {
                        return reason;
                    }
                }
            }
        }
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

    fn finished(&mut self, finished: Finished) {
        if let Some(id) = &finished.invocation_id {
            self.active_ids.remove(id);
            self.streams.remove(id);
        }
        for (stream_id, registration) in &finished.stream_ids {
            self.uploads.remove_registered(stream_id, *registration);
        }
        match finished.counted {
            Slot::Parallel => self.parallel = self.parallel.saturating_sub(1),
            Slot::Stream => self.open_streams = self.open_streams.saturating_sub(1),
        }
    }

    async fn on_bytes(&mut self, bytes: &[u8]) -> Option<CloseReason> {
        if bytes.is_empty() {
            return None;
        }
        if let Err(err) = self.decoder.feed(bytes) {
            return Some(protocol_close(err));
        }
        while let Some(next) = self.decoder.next_message() {
            match next {
                Ok(message) => {
                    if let Some(received) = &mut self.received {
                        let is_sequence = matches!(message, HubMessage::Sequence { .. });
                        if !received.accept(message.is_trackable(), is_sequence) {
                            continue;
                        }
                    }
                    if let Some(reason) = self.on_message(message).await {
                        return Some(reason);
                    }
                }
                Err(ProtocolError::UnknownMessageType(kind)) => {
                    tracing::debug!(connection = %self.connection.log_id(), kind, "ignoring a message of unknown type");
                }
                Err(ProtocolError::InvocationBinding {
                    invocation_id,
                    target,
                    detail,
                }) => {
                    // Still an invocation the client counted, as ASP.NET Core's binding
                    // failure message is.
                    if let Some(received) = &mut self.received {
                        if !received.accept(true, false) {
                            continue;
                        }
                    }
                    if let Some(id) = invocation_id {
                        let text = match self.hub.method(&target) {
                            None => unknown_method(&target),
                            Some(method) => HubError::Binding(detail.to_string())
                                .completion_text(method.spec.name, self.limits.detailed_errors),
                        };
                        self.reply(&id, CompletionResult::Error(text)).await;
                    }
                }
                Err(err) => return Some(protocol_close(err)),
            }
        }
        None
    }

    async fn on_message(&mut self, message: HubMessage) -> Option<CloseReason> {
        match message {
            HubMessage::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                ..
            } => {
                let id = invocation_id.filter(|id| !id.is_empty());
                self.invoke(id, target, arguments, stream_ids, false).await
            }
            HubMessage::StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
                ..
            } => {
                self.invoke(Some(invocation_id), target, arguments, stream_ids, true)
                    .await
            }
            HubMessage::StreamItem {
                invocation_id,
                item,
                ..
            } => {
                if let Some(upload) = self.uploads.get(&invocation_id) {
                    // Waiting here slows only this client, whose own method drains the stream;
                    // a method that stops draining must not keep a closing connection alive.
                    let sent = tokio::select! {
                        sent = upload.send(item) => sent.is_ok(),
                        _ = self.connection.closed() => {
                            return self.connection.close_reason().cloned();
                        }
                    };
                    if !sent {
                        self.uploads.remove(&invocation_id);
                    }
                }
                None
            }
            HubMessage::Completion { invocation_id, .. } => {
                // Ends a client-to-server stream: dropping the sender ends the method's receiver.
                self.uploads.remove(&invocation_id);
                None
            }
            HubMessage::CancelInvocation { invocation_id, .. } => {
                if let Some(cancel) = self.streams.get(&invocation_id) {
                    cancel.cancel();
                }
                None
            }
            HubMessage::Ping => None,
            HubMessage::Close { error, .. } => {
                if let Some(error) = error {
                    tracing::debug!(connection = %self.connection.log_id(), %error, "client closed with an error");
                }
                Some(CloseReason::ClientClosed)
            }
            HubMessage::Ack { sequence_id } => {
                self.connection.acknowledge(sequence_id);
                None
            }
            HubMessage::Sequence { sequence_id } => match &mut self.received {
                Some(received) => received
                    .reset(sequence_id)
                    .err()
                    .map(|err| CloseReason::ProtocolError(err.to_string())),
                None => None,
            },
        }
    }

    async fn reply(&self, invocation_id: &str, result: CompletionResult) {
        reply(&self.connection, self.protocol, invocation_id, result).await;
    }

    async fn invoke(
        &mut self,
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Value>,
        stream_ids: Vec<String>,
        stream_response: bool,
    ) -> Option<CloseReason> {
        // A call that arrives after the token expired is never dispatched.
        if self.limits.expiry_deadline(&self.connection) <= Instant::now() {
            return Some(CloseReason::Expired);
        }
        let hub = self.hub.clone();
        let Some(method) = hub.method(&target) else {
            if let Some(id) = &invocation_id {
                self.reply(id, CompletionResult::Error(unknown_method(&target)))
                    .await;
            }
            return None;
        };
        let target = method.spec.name;
        if let Err(text) = self.check_call(
            method,
            &invocation_id,
            &arguments,
            &stream_ids,
            stream_response,
        ) {
            if let Some(id) = &invocation_id {
                self.reply(id, CompletionResult::Error(text)).await;
            }
            return None;
        }
        let arguments = if method.spec.signed {
            match self.open_envelope(&hub, target, arguments).await {
                Ok(arguments) => arguments,
                Err(text) => {
                    if let Some(id) = &invocation_id {
                        self.reply(id, CompletionResult::Error(text)).await;
                    }
                    return None;
                }
            }
        } else {
            arguments
        };
        let call = Call::new(self.connection.clone(), hub.lifetime.clone());
        let connection = self.connection.clone();
        let protocol = self.protocol;
        let detailed = self.limits.detailed_errors;
        if let Some(id) = &invocation_id {
            self.active_ids.insert(id.clone());
        }
        match &method.handler {
            Handler::Unary(handler) => {
                let future = handler(call, arguments);
                self.parallel += 1;
                self.tasks.spawn_local(complete(
                    future,
                    connection,
                    protocol,
                    invocation_id,
                    target,
                    detailed,
                    Slot::Parallel,
                ));
            }
            Handler::ServerStream(handler) => {
                let id = invocation_id?;
                let cancel = call.cancel.child_token();
                let call = Call {
                    cancel: cancel.clone(),
                    ..call
                };
                let stream = handler(call, arguments);
                self.streams.insert(id.clone(), cancel.clone());
                self.open_streams += 1;
                self.tasks.spawn_local(async move {
                    let end = match stream {
                        Ok(stream) => {
                            pump_stream(
                                &connection,
                                protocol,
                                &id,
                                stream,
                                &cancel,
                                target,
                                detailed,
                            )
                            .await
                        }
                        Err(err) => CompletionResult::Error(err.completion_text(target, detailed)),
                    };
                    reply(&connection, protocol, &id, end).await;
                    Finished {
                        invocation_id: Some(id),
                        counted: Slot::Stream,
                        stream_ids: Vec::new(),
                    }
                });
            }
            Handler::Upload { handler, .. } => {
                let mut receivers = Vec::with_capacity(stream_ids.len());
                let mut registered = Vec::with_capacity(stream_ids.len());
                for stream_id in stream_ids {
                    let (tx, rx) = mpsc::channel(self.limits.upload_buffer);
                    let registration = self.uploads.insert(stream_id.clone(), tx);
                    registered.push((stream_id, registration));
                    receivers.push(rx);
                }
                let future = handler(call, arguments, receivers);
                self.open_streams += 1;
                self.tasks.spawn_local(async move {
                    let mut finished = complete(
                        future,
                        connection,
                        protocol,
                        invocation_id,
                        target,
                        detailed,
                        Slot::Stream,
                    )
                    .await;
                    finished.stream_ids = registered;
                    finished
                });
            }
        }
        None
    }

    /// Verifies the envelope of a signed method before it runs; the method then receives the
    /// verified command as its single argument. `Err` is the completion text.
    async fn open_envelope(
        &self,
        hub: &Hub,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<Vec<Value>, String> {
        let rejected =
            |code: &str| format!("Failed to invoke '{target}': envelope rejected ({code})");
        let principal = self.connection.principal();
        let Some(session) = principal.message_session() else {
            return Err(rejected("no_message_key"));
        };
        let Some(envelope) = arguments.first() else {
            return Err(rejected("malformed"));
        };
        match hub
            .services
            .envelopes
            .open(envelope, session, &hub.path, target)
            .await
        {
            Ok(command) => Ok(vec![command]),
            Err(err) => {
                tracing::info!(
                    target: "audit",
                    event = "envelope_rejected",
                    code = err.code(),
                    sub = %principal.sub,
                    method = target,
                    connection = %self.connection.log_id(),
                    "signed envelope rejected"
                );
                Err(rejected(err.code()))
            }
        }
    }

    /// Every check before a method runs; `Err` is the completion text. The texts are ASP.NET
    /// Core's; the order is too, except that ASP.NET Core binds the arguments first (in its
    /// protocol reader) and Signet checks the caller's roles first, so that a caller without
    /// them learns nothing about a method's parameters.
    fn check_call(
        &self,
        method: &Method,
        invocation_id: &Option<String>,
        arguments: &[Value],
        stream_ids: &[String],
        stream_response: bool,
    ) -> Result<(), String> {
        let target = method.spec.name;
        let principal = self.connection.principal();
        if !method.spec.access.allows(&principal.roles) {
            return Err(format!(
                "Failed to invoke '{target}' because user is unauthorized"
            ));
        }
        if method.is_stream_response() && !stream_response {
            return Err(format!(
                "The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
            ));
        }
        if !method.is_stream_response() && stream_response {
            return Err(format!(
                "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
            ));
        }
        if let Some(id) = invocation_id {
            if self.active_ids.contains(id) {
                return Err(format!("Invocation ID '{id}' is already in use."));
            }
        }
        let detailed = self.limits.detailed_errors;
        if stream_ids.len() != method.upload_streams() {
            let err = HubError::hub(format!(
                "Client sent {} stream(s), Hub method expects {}.",
                stream_ids.len(),
                method.upload_streams()
            ));
            return Err(err.completion_text(target, detailed));
        }
        if stream_ids.iter().any(|id| self.uploads.contains(id)) {
            return Err(
                HubError::hub("A stream id is already in use.").completion_text(target, detailed)
            );
        }
        if (method.is_stream_response() || !stream_ids.is_empty())
            && self.open_streams >= self.limits.max_streams
        {
            return Err(HubError::hub(format!(
                "A connection may have at most {} streams open at once.",
                self.limits.max_streams
            ))
            .completion_text(target, detailed));
        }
        let params = method.spec.params;
        if arguments.len() != params.len() {
            let err = HubError::Binding(format!(
                "Invocation provides {} argument(s) but target expects {}.",
                arguments.len(),
                params.len()
            ));
            return Err(err.completion_text(target, detailed));
        }
        if let Some((index, param)) = params
            .iter()
            .zip(arguments)
            .enumerate()
            .find_map(|(i, (param, value))| (!param.accepts(value)).then_some((i, param)))
        {
            let err = HubError::Binding(format!(
                "Error binding arguments. Make sure that the types of the provided values match \
                 the types of the hub method being invoked. Argument {index} must be {}.",
                param.name()
            ));
            return Err(err.completion_text(target, detailed));
        }
        Ok(())
    }
}

/// Awaits a method and answers the caller (when it asked for an answer).
async fn complete(
    method: futures_util::future::LocalBoxFuture<'static, super::MethodResult>,
    connection: Arc<Connection>,
    protocol: HubProtocol,
    invocation_id: Option<String>,
    target: &'static str,
    detailed: bool,
    counted: Slot,
) -> Finished {
    let result = method.await;
    if let Some(id) = &invocation_id {
        let completion = match result {
            Ok(None) => CompletionResult::Void,
            Ok(Some(value)) => CompletionResult::Result(value),
            Err(err) => CompletionResult::Error(err.completion_text(target, detailed)),
        };
        reply(&connection, protocol, id, completion).await;
    }
    Finished {
        invocation_id,
        counted,
        stream_ids: Vec::new(),
    }
}

/// Sends every item of a server-to-client stream, until it ends or the caller cancels it.
async fn pump_stream(
    connection: &Connection,
    protocol: HubProtocol,
    invocation_id: &str,
    mut stream: futures_util::stream::LocalBoxStream<'static, Result<Value, HubError>>,
    cancel: &CancellationToken,
    target: &str,
    detailed: bool,
) -> CompletionResult {
    loop {
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => return CompletionResult::Void,
            item = stream.next() => item,
        };
        match item {
            None => return CompletionResult::Void,
            Some(Ok(value)) => {
                let message = HubMessage::stream_item(invocation_id, value);
                if !send_message(connection, protocol, &message).await {
                    return CompletionResult::Void;
                }
            }
            Some(Err(err)) => {
                let text = match err {
                    HubError::Hub(_) | HubError::Exact(_) => err.completion_text(target, detailed),
                    _ if detailed => format!(
                        "An error occurred on the server while streaming results. Exception: {err}"
                    ),
                    _ => "An error occurred on the server while streaming results.".to_string(),
                };
                return CompletionResult::Error(text);
            }
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

/// ASP.NET Core finds the method while binding the arguments, so an unknown one is a binding
/// failure with a HubException, whose text is shown even without detailed errors.
fn unknown_method(target: &str) -> String {
    format!("Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist.")
}

fn protocol_close(err: ProtocolError) -> CloseReason {
    match err {
        ProtocolError::MessageTooLarge { .. } => CloseReason::MessageTooLarge,
        other => CloseReason::ProtocolError(other.to_string()),
    }
}
