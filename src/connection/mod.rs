//! One connection type for every transport.
//!
//! A [`Connection`] holds the public id and secret token from negotiate, the principal and its
//! expiry, the negotiated protocol, both directions of traffic, and a cancellation token:
//!
//! - outbound, a bounded queue that the hub session and other connections' sends fill
//!   ([`Connection::try_send`] never waits: a full queue closes the slow connection instead of
//!   slowing the sender), and that the attached transport drains;
//! - inbound, a bounded queue from whichever request carries the client's frames (a WebSocket
//!   reader, a long-polling or Server-Sent Events `POST`) to the hub session.
//!
//! Transports come and go through [`Attachment`]s: a WebSocket holds one for its lifetime, an
//! SSE response for the stream's, a long poll for one request. While attached a transport owns
//! the queue's receiver; when it lets go the connection either ends (SSE, or a WebSocket
//! without stateful reconnect) or waits for the next one for the disconnect timeout (long
//! polling, a WebSocket with stateful reconnect), which `supervise` enforces.

mod attach;
mod census;
mod close;
mod queue;
mod refresh;
mod registry;
mod replay;
mod revocation;
mod supervise;

pub use attach::{coalesce, AttachError, Attachment};
pub use close::{CloseReason, CloseStats};
use queue::Queue;
pub use refresh::{apply_refresh, carry_on, refresh, verify_refresh, RefreshError};
pub use registry::{Claim, ConnectionRegistry, RegistryFull};
pub use replay::{ReceivedSequence, ReplayBuffer};
pub use revocation::{admit, enforce_revocations};
pub use supervise::{supervise, Timeouts};

use crate::auth::{Principal, TokenDigest};
use crate::protocol::HubProtocol;
use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a transport writes: one or more framed hub messages.
pub type OutboundFrame = Bytes;

/// Frames buffered between the requests that carry the client's frames and the hub session.
/// Not a setting: it is a hand-off between two tasks of one connection, and when it is full
/// the transport stops reading (back-pressure on that client alone). Its memory is bounded by
/// `hub.max_message_bytes` through the frame limit; a larger buffer would only add memory, a
/// smaller one only task switches.
const INBOUND_BUFFER: usize = 16;

/// A frame from the transport, for the hub session.
#[derive(Debug)]
pub enum Inbound {
    Text(Bytes),
    Binary(Bytes),
    /// A transport re-attached after a drop with stateful reconnect: the client's Sequence
    /// message comes next, and partial data from the lost transport is void.
    Resumed,
}

/// The transport a connection uses. It is fixed by the first transport request: a connection
/// never changes transports (ASP.NET Core answers 400 as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

impl TransportKind {
    /// The name negotiate uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSockets => "WebSockets",
            Self::ServerSentEvents => "ServerSentEvents",
            Self::LongPolling => "LongPolling",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A live or negotiated hub connection.
pub struct Connection {
    /// Public id, shown to the hub (`connectionId`).
    pub id: String,
    /// Secret token from negotiate (`id` on transport requests); equals `id` for negotiate v0.
    pub token: String,
    /// What log lines name the connection by: `id`, except for negotiate v0 where `id` is the
    /// token, so a separate random label (`v0-...`) that grants nothing.
    log_id: String,
    /// Hub name, e.g. `home`.
    pub hub: Arc<str>,
    principal: RwLock<Arc<Principal>>,
    /// `jti` of the token the connection was opened with: the only expired token its later
    /// requests may carry (see `transport::connection_request`).
    opening_jti: Option<String>,
    /// The token negotiate verified, by digest, with the principal it proved: the WebSocket
    /// upgrade that follows with the same token is not verified again (`transport` re-checks
    /// its expiry and revocation).
    opening_token: OnceLock<(TokenDigest, Arc<Principal>)>,
    expires_at: AtomicI64,
    protocol: OnceLock<HubProtocol>,
    transport: OnceLock<TransportKind>,
    /// Frames for the client, taken by the attached transport.
    outbound: Queue<OutboundFrame>,
    /// Locked by the attached transport for as long as it is attached: the one consumer of
    /// `outbound`.
    outbound_taker: Arc<tokio::sync::Mutex<()>>,
    /// Frames from the client, for the hub session.
    inbound: Queue<Inbound>,
    /// The session took the inbound queue ([`Connection::take_inbound`]).
    inbound_taken: AtomicBool,
    cancel: CancellationToken,
    close_reason: OnceLock<CloseReason>,
    attach: attach::AttachState,
    /// Negotiate asked for stateful reconnect (`useStatefulReconnect=true`).
    stateful_requested: AtomicBool,
    /// Set once the handshake turned stateful reconnect on.
    replay: OnceLock<ReplayBuffer>,
    /// A `POST` is feeding the session (a second one at the same time gets 409).
    posting: AtomicBool,
    expiry_changed: tokio::sync::Notify,
    /// Outbound counters, set once the handshake names the protocol.
    traffic: OnceLock<crate::metrics::Traffic>,
}

/// Names the connection by its log id: `Debug` output must never show the token.
impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("log_id", &self.log_id)
            .field("hub", &self.hub)
            .field("transport", &self.transport.get())
            .finish_non_exhaustive()
    }
}

/// Why a send did not reach the connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the connection is closed")]
    Closed,
    #[error("the connection's outbound queue is full")]
    Full,
}

impl Connection {
    /// A new connection for `principal`, cancelled with `parent` (the server's shutdown token).
    pub fn new(
        id: String,
        token: String,
        hub: Arc<str>,
        principal: Principal,
        queue_capacity: usize,
        parent: &CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self::build(
            id,
            token,
            hub,
            principal,
            queue_capacity,
            parent,
        ))
    }

    fn build(
        id: String,
        token: String,
        hub: Arc<str>,
        principal: Principal,
        queue_capacity: usize,
        parent: &CancellationToken,
    ) -> Self {
        let log_id = if id == token {
            let label = crate::auth::issue::random_id();
            format!("v0-{}", &label[..12])
        } else {
            id.clone()
        };
        Self {
            id,
            token,
            log_id,
            hub,
            expires_at: AtomicI64::new(principal.expires_at),
            opening_jti: principal.jti.clone(),
            opening_token: OnceLock::new(),
            principal: RwLock::new(Arc::new(principal)),
            protocol: OnceLock::new(),
            transport: OnceLock::new(),
            outbound: Queue::new(queue_capacity),
            outbound_taker: Arc::new(tokio::sync::Mutex::new(())),
            inbound: Queue::new(INBOUND_BUFFER),
            inbound_taken: AtomicBool::new(false),
            cancel: parent.child_token(),
            close_reason: OnceLock::new(),
            attach: attach::AttachState::default(),
            stateful_requested: AtomicBool::new(false),
            replay: OnceLock::new(),
            posting: AtomicBool::new(false),
            expiry_changed: tokio::sync::Notify::new(),
            traffic: OnceLock::new(),
        }
    }

    /// A connection another node negotiated and handed over (same id and token): it keeps
    /// the `jti` it was opened with, which may differ from its current principal's.
    pub fn adopted(
        id: String,
        token: String,
        hub: Arc<str>,
        principal: Principal,
        opening_jti: Option<String>,
        queue_capacity: usize,
        parent: &CancellationToken,
    ) -> Self {
        let mut connection = Self::build(id, token, hub, principal, queue_capacity, parent);
        connection.opening_jti = opening_jti;
        connection
    }

    /// The `jti` of the token the connection was opened with.
    pub fn opening_jti(&self) -> Option<&str> {
        self.opening_jti.as_deref()
    }

    /// Remembers `digest` as the token the connection was opened with, which proved its
    /// principal. Only where that token was verified: negotiate.
    pub fn remember_opening_token(&self, digest: TokenDigest) {
        let _ = self.opening_token.set((digest, self.principal()));
    }

    /// The principal the opening token proved, if `digest` is that token's.
    pub fn opened_by(&self, digest: &TokenDigest) -> Option<Arc<Principal>> {
        self.opening_token
            .get()
            .filter(|(opening, _)| opening.matches(digest))
            .map(|(_, principal)| principal.clone())
    }

    /// Whether a transport ever came: a connection without one may move to another node.
    pub fn never_attached(&self) -> bool {
        self.transport().is_none() && !self.attach.ever_attached()
    }

    /// A connection of `alice` (role `user`) on the `home` hub whose token expires at
    /// `expires_at` (Unix seconds), with fresh ids, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(expires_at: i64) -> Arc<Self> {
        let principal = Principal {
            sub: "alice".into(),
            roles: vec!["user".into()],
            jti: None,
            sid: None,
            owner: None,
            name: None,
            issued_at: None,
            expires_at,
            kid: "k".into(),
        };
        Self::new(
            crate::auth::issue::random_id(),
            crate::auth::issue::random_id(),
            Arc::from("home"),
            principal,
            8,
            &CancellationToken::new(),
        )
    }

    /// The next queued frame, for unit tests of what reached the queue.
    #[cfg(test)]
    pub(crate) fn try_recv_outbound(&self) -> Option<OutboundFrame> {
        let _taker = self.outbound_taker.try_lock().ok()?;
        self.outbound.try_pop()
    }

    /// The connection's name in log lines: never its token, whatever the negotiate version.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// Whether `jti` names the token this connection was opened with (never true without one).
    pub fn opened_with(&self, jti: Option<&str>) -> bool {
        matches!((self.opening_jti.as_deref(), jti), (Some(a), Some(b)) if a == b)
    }

    /// The principal of the token currently backing this connection.
    pub fn principal(&self) -> Arc<Principal> {
        match self.principal.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the principal after an in-band token refresh (same `sub`, checked by the caller;
    /// [`ConnectionRegistry::refresh`] also re-indexes the connection under the new token).
    pub fn set_principal(&self, principal: Principal) {
        self.expires_at
            .store(principal.expires_at, Ordering::Release);
        let principal = Arc::new(principal);
        match self.principal.write() {
            Ok(mut guard) => *guard = principal,
            Err(poisoned) => *poisoned.into_inner() = principal,
        }
        // One session waits on this; a permit is kept if it is busy right now.
        self.expiry_changed.notify_one();
    }

    /// Resolves after the principal (and so the expiry) changed.
    pub async fn expiry_changed(&self) {
        self.expiry_changed.notified().await
    }

    /// Token expiry, Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.expires_at.load(Ordering::Acquire)
    }

    /// The protocol chosen in the handshake, once it has happened.
    pub fn protocol(&self) -> Option<HubProtocol> {
        self.protocol.get().copied()
    }

    pub fn set_protocol(&self, protocol: HubProtocol) {
        let _ = self.protocol.set(protocol);
    }

    /// The transport the connection uses, once a transport request has arrived.
    pub fn transport(&self) -> Option<TransportKind> {
        self.transport.get().copied()
    }

    /// Fixes the transport on the first transport request; `Err` with the transport already in
    /// use if it differs.
    pub fn set_transport(&self, kind: TransportKind) -> Result<(), TransportKind> {
        let set = *self.transport.get_or_init(|| kind);
        if set == kind {
            Ok(())
        } else {
            Err(set)
        }
    }

    /// Long polling keeps the connection alive by polling: the client sends no pings and the
    /// server needs none (ASP.NET Core's "inherent keep-alive").
    pub fn has_inherent_keep_alive(&self) -> bool {
        self.transport() == Some(TransportKind::LongPolling)
    }

    /// Negotiate asked for stateful reconnect, and the server allows it.
    pub fn request_stateful_reconnect(&self) {
        self.stateful_requested.store(true, Ordering::Release);
    }

    pub fn stateful_reconnect_requested(&self) -> bool {
        self.stateful_requested.load(Ordering::Acquire)
    }

    /// Turns stateful reconnect on after the handshake, if negotiate asked for it, the
    /// transport is a WebSocket (the only one the clients resume) and the client speaks
    /// version 2 of the hub protocol (Ack and Sequence). Returns whether it is on.
    pub fn start_stateful_reconnect(&self, protocol_version: i32, buffer_limit: usize) -> bool {
        let eligible = self.stateful_reconnect_requested()
            && self.transport() == Some(TransportKind::WebSockets)
            && protocol_version >= 2;
        if eligible {
            let _ = self.replay.set(ReplayBuffer::new(buffer_limit));
        }
        eligible
    }

    /// The replay buffer, when stateful reconnect is on.
    pub fn replay(&self) -> Option<&ReplayBuffer> {
        self.replay.get()
    }

    /// The client acknowledged every trackable message up to `sequence_id`.
    pub fn acknowledge(&self, sequence_id: u64) {
        if let Some(replay) = self.replay() {
            replay.acknowledge(sequence_id);
        }
    }

    /// Whether the connection survives its transport letting go, waiting for the next one:
    /// long polling always, a WebSocket when stateful reconnect is on.
    pub fn is_resumable(&self) -> bool {
        match self.transport() {
            Some(TransportKind::LongPolling) => true,
            Some(TransportKind::WebSockets) => self.replay().is_some(),
            _ => false,
        }
    }

    /// Whether a transport request may still attach: an open connection, or a closed one
    /// whose client can come back for its Close message (see [`supervise`]).
    pub fn accepts_transport(&self) -> bool {
        !self.is_closed()
            || (self.is_resumable() && self.attach.ever_attached() && self.has_close_message())
    }

    /// Whether the connection closed with something to tell its client (the Close message of
    /// an expiry, a kick, a shutdown...) that no transport has delivered yet.
    pub fn has_close_message(&self) -> bool {
        self.protocol().is_some()
            && !self.attach.close_delivered()
            && self
                .close_reason()
                .is_some_and(|reason| reason.close_error().is_some())
    }

    /// Queues bytes without waiting. A full queue closes this connection as too slow, so that
    /// no sender is ever held up by it.
    pub fn try_send(&self, frame: OutboundFrame) -> Result<(), SendError> {
        // The close reason, not the token: a broadcast calls this for every connection, and
        // `CancellationToken::is_cancelled` locks a mutex in a node of its own, a cache miss
        // per recipient (7% of the server's time in a broadcast to 10,000). `close` sets the
        // reason before it cancels, and shutdown closes every connection with one.
        if self.close_reason.get().is_some() {
            return Err(SendError::Closed);
        }
        let len = frame.len();
        match self.outbound.try_push(frame) {
            Ok(()) => {
                self.count_sent(len);
                Ok(())
            }
            Err(_) => {
                self.close(CloseReason::SlowConsumer);
                Err(SendError::Full)
            }
        }
    }

    /// Queues bytes of this connection's own replies and stream items, waiting for room: the
    /// only one held up is the connection itself (its reader stops while it waits).
    pub async fn send(&self, frame: OutboundFrame) -> Result<(), SendError> {
        let len = frame.len();
        if self.cancel.is_cancelled() {
            return Err(SendError::Closed);
        }
        // Room now (the usual case): queued without setting up the wait below.
        let Err(frame) = self.outbound.try_push(frame) else {
            self.count_sent(len);
            return Ok(());
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(SendError::Closed),
            () = self.outbound.push(frame) => {
                self.count_sent(len);
                Ok(())
            }
        }
    }

    /// Counts into the server's metrics from now on.
    pub fn set_traffic(&self, traffic: crate::metrics::Traffic) {
        let _ = self.traffic.set(traffic);
    }

    fn count_sent(&self, len: usize) {
        if let Some(traffic) = self.traffic.get() {
            traffic.record(len);
        }
    }

    /// Frames waiting in the outbound queue.
    pub fn queue_depth(&self) -> usize {
        self.outbound.len()
    }

    /// Hands a frame from the client to the hub session, waiting for room (the client's
    /// request waits, nobody else). `Err` once the connection is closed.
    pub async fn receive(&self, frame: Inbound) -> Result<(), SendError> {
        if self.cancel.is_cancelled() {
            return Err(SendError::Closed);
        }
        // Room now (the usual case): queued without setting up the wait below.
        let Err(frame) = self.inbound.try_push(frame) else {
            return Ok(());
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(SendError::Closed),
            () = self.inbound.push(frame) => Ok(()),
        }
    }

    /// The session's end of the inbound queue; `None` once taken (one session per connection).
    pub fn take_inbound(self: &Arc<Self>) -> Option<InboundReceiver> {
        (!self.inbound_taken.swap(true, Ordering::AcqRel)).then(|| InboundReceiver(self.clone()))
    }

    /// Marks a `POST` as feeding the session; `None` if another one already is (409).
    pub fn begin_post(self: &Arc<Self>) -> Option<PostGuard> {
        (!self.posting.swap(true, Ordering::AcqRel)).then(|| PostGuard(self.clone()))
    }

    /// Whether a `POST` is feeding the session right now.
    pub fn is_posting(&self) -> bool {
        self.posting.load(Ordering::Acquire)
    }

    /// Closes the connection; the first reason given is the one reported.
    pub fn close(&self, reason: CloseReason) {
        if self.close_reason.set(reason.clone()).is_ok() {
            tracing::debug!(connection = %self.log_id, reason = reason.code(), "closing connection");
        }
        self.cancel.cancel();
    }

    /// The reason the connection closed (or is closing), if it did.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.get()
    }

    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the connection is closing, for any reason.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// A token cancelled with this connection, for tasks that outlive a borrow of it.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether a transport is attached right now.
    pub fn is_attached(&self) -> bool {
        *self.attach.attached.borrow()
    }

    /// Follows attaching and detaching transports.
    pub fn watch_attached(&self) -> watch::Receiver<bool> {
        self.attach.attached.subscribe()
    }
}

/// The hub session's end of a connection's inbound queue.
#[derive(Debug)]
pub struct InboundReceiver(Arc<Connection>);

impl InboundReceiver {
    /// The next frame from the client, waiting for one. Cancel-safe.
    pub async fn recv(&mut self) -> Inbound {
        self.0.inbound.pop().await
    }

    /// The next frame if one is there already.
    pub fn try_recv(&mut self) -> Option<Inbound> {
        self.0.inbound.try_pop()
    }
}

/// Held while a `POST` feeds the session.
#[derive(Debug)]
pub struct PostGuard(Arc<Connection>);

impl Drop for PostGuard {
    fn drop(&mut self) {
        self.0.posting.store(false, Ordering::Release);
    }
}
