//! No sticky sessions: a request on a connection another node holds is forwarded to that node
//! over Redis, and a negotiated connection that never had a transport moves to the node its
//! first transport request reaches (see README, "No sticky sessions").
//!
//! Each node listens on `{prefix}:forward:{node}`. A [`Frame::Forward`] carries the request
//! (its kind, hub, connection token, the principal the receiving node authenticated, and its
//! body); the owner runs it through its [`ForwardHandler`] (the transports' own code) and
//! answers with a [`Frame::Forwarded`] on the requester's channel.
//!
//! The ownership directory: a node that adopted a connection writes
//! `{prefix}:owner:{connection id}` and `{prefix}:owner-token:{sha256 of the token}` -> its
//! node id, expiring after [`OWNER_TTL`], rewritten every `OWNER_REFRESH` (5 s) while the
//! connection lives and deleted when it leaves. Anything addressed to a connection asks this node's
//! registry first, then the directory, then the node the id or token names.

use super::tunnel::Tunnels;
use super::wire::{Frame, Origin};
use super::{Cluster, Subscriber};
use crate::auth::Principal;
use crate::metrics::Metrics;
use bytes::Bytes;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// The content type of an answer that hands a connection over (its body: the connection).
pub const HANDOVER: &str = "application/vnd.signet.handover+json";
/// The content type of an answer saying the connection moved (its body: the node it moved to).
pub const MOVED: &str = "application/vnd.signet.moved";
/// The content type of an answer saying the tunnel asked for is open.
pub const TUNNEL: &str = "application/vnd.signet.tunnel";
/// How long a directory entry lives without being rewritten (a few presence heartbeats).
pub const OWNER_TTL: Duration = Duration::from_secs(15);
/// How often the owner rewrites its directory entries.
const OWNER_REFRESH: Duration = Duration::from_secs(5);
/// Forwarded requests this node waits for answers to, at most.
const MAX_WAITING: usize = 4_096;
/// Forwarded requests this node serves at once, at most (long polls wait); more get 503.
const MAX_SERVING: usize = 4_096;
/// How often a forwarded request waiting for its answer checks that its node still listens.
const LISTENING_CHECK: Duration = Duration::from_secs(2);
/// Nodes whose listening this node remembers (for [`LISTENING_CHECK`]), at most.
const LISTENING_MEMORY_ENTRIES: u64 = 1_024;
/// How long a node remembers whom it handed a connection to, and how many it remembers.
const HANDOVER_MEMORY: Duration = Duration::from_secs(30);
const HANDOVER_MEMORY_ENTRIES: u64 = 16_384;

/// What a forwarded request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// A WebSocket upgrade: adopt the connection, or answer why not.
    WebSocket,
    /// An SSE stream: adopt the connection, or answer why not.
    EventStream,
    /// A long poll: adopt the connection if it never had a transport, else poll there.
    Poll,
    Send,
    Delete,
    Refresh,
    /// A WebSocket reconnecting under stateful reconnect (body: the tunnel id): attach a
    /// tunnelled transport to the connection, or answer why not.
    Tunnel,
}

impl ForwardKind {
    const ALL: [Self; 7] = [
        Self::WebSocket,
        Self::EventStream,
        Self::Poll,
        Self::Send,
        Self::Delete,
        Self::Refresh,
        Self::Tunnel,
    ];

    fn code(self) -> u8 {
        match self {
            Self::WebSocket => 1,
            Self::EventStream => 2,
            Self::Poll => 3,
            Self::Send => 4,
            Self::Delete => 5,
            Self::Refresh => 6,
            Self::Tunnel => 7,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The `kind` label of `signet_cluster_forwarded_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::WebSocket | Self::EventStream => "adopt",
            Self::Poll => "poll",
            Self::Send => "send",
            Self::Delete => "delete",
            Self::Refresh => "refresh",
            Self::Tunnel => "tunnel",
        }
    }

    /// Whether this request may take over a connection that never had a transport.
    pub fn adopts(self) -> bool {
        matches!(self, Self::WebSocket | Self::EventStream | Self::Poll)
    }
}

/// A request on a connection, as the node holding it receives it.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    pub kind: ForwardKind,
    pub hub: String,
    pub token: String,
    pub principal: Principal,
    pub body: Bytes,
}

/// The response headers that travel with a forwarded answer (lower case), besides its content
/// type: the challenge of a 401 (RFC 9110 requires it) and the wait of a 429 or 503. Others
/// (CORS, caching) are the requesting node's to write.
pub const CARRIED_HEADERS: [&str; 2] = ["www-authenticate", "retry-after"];

/// The owner's answer: an HTTP response to write, or a [`HANDOVER`] or [`MOVED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// (lower-case name, value) of the response's [`CARRIED_HEADERS`].
    pub headers: Vec<(String, String)>,
}

impl ForwardAnswer {
    /// 503: this node serves [`MAX_SERVING`] forwarded requests already (long polls among
    /// them). `Retry-After: 1`, as the node's other overload answers: a slot frees as soon as
    /// any of them ends, and sends end within milliseconds.
    fn busy() -> Self {
        Self {
            status: 503,
            content_type: "text/plain".into(),
            body: Bytes::from_static(b"the node holding the connection is busy; try again"),
            headers: vec![("retry-after".into(), "1".into())],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the cluster's Redis is unavailable: {0}")]
    Unavailable(String),
    #[error("node {0} did not answer in time")]
    NoAnswer(String),
    #[error("node {0} is gone: nothing listens on its forwarding channel")]
    Gone(String),
}

/// Runs forwarded requests on the node that holds their connection.
#[async_trait::async_trait]
pub trait ForwardHandler: Send + Sync {
    /// `from`: the node that forwarded it.
    async fn handle(&self, from: &str, request: ForwardRequest) -> ForwardAnswer;
}

/// This node's end of request forwarding and of the ownership directory.
pub struct Forwarder {
    cluster: Arc<Cluster>,
    next_request: AtomicU64,
    waiting: DashMap<u64, oneshot::Sender<ForwardAnswer>>,
    /// Set once the transports exist; cleared at shutdown (it holds their state).
    handler: RwLock<Option<Arc<dyn ForwardHandler>>>,
    serving: Arc<Semaphore>,
    /// Connection token -> the node it was handed over to, for requests racing the directory.
    handed_over: moka::sync::Cache<String, String>,
    /// Connection tokens this node is adopting right now: a request forwarded here for one of
    /// them (a racing adopter sent on by the old owner) waits until it is registered.
    adopting: DashMap<String, watch::Sender<()>>,
    /// WebSockets tunnelled to or from this node.
    tunnels: Arc<Tunnels>,
    /// Node -> whether something listened on its forwarding channel, lately.
    listening: moka::sync::Cache<String, bool>,
    /// User (`sub`) -> requests of theirs this node forwarded and waits for; no entry at 0, so
    /// at most as many entries as requests waiting.
    per_user: DashMap<String, usize>,
    metrics: Metrics,
}

/// While it lives, one request of its user counts as forwarded and waiting (see
/// [`Forwarder::begin_forwarding`]).
pub struct Forwarding {
    forwarder: Arc<Forwarder>,
    sub: String,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.forwarder
            .per_user
            .remove_if_mut(&self.sub, |_, waiting| {
                *waiting = waiting.saturating_sub(1);
                *waiting == 0
            });
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this user already has {0} requests waiting for other nodes")]
pub struct TooManyForwarded(pub usize);

/// While it lives, its token counts as being adopted here (see [`Forwarder::settled`]).
pub struct Adopting {
    forwarder: Arc<Forwarder>,
    token: Option<String>,
}

impl Drop for Adopting {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            // Dropping the sender wakes whoever waits in `settled`.
            self.forwarder.adopting.remove(&token);
        }
    }
}

impl Forwarder {
    /// Subscribes this node's forwarding channel.
    pub fn start(
        cluster: Arc<Cluster>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let forwarder = Arc::new(Self {
            cluster: cluster.clone(),
            next_request: AtomicU64::new(1),
            waiting: DashMap::new(),
            handler: RwLock::new(None),
            serving: Arc::new(Semaphore::new(MAX_SERVING)),
            handed_over: moka::sync::Cache::builder()
                .max_capacity(HANDOVER_MEMORY_ENTRIES)
                .time_to_live(HANDOVER_MEMORY)
                .build(),
            adopting: DashMap::new(),
            tunnels: Tunnels::new(cluster.clone()),
            per_user: DashMap::new(),
            listening: moka::sync::Cache::builder()
                .max_capacity(LISTENING_MEMORY_ENTRIES)
                .time_to_live(LISTENING_CHECK / 2)
                .build(),
            metrics,
        });
        cluster.subscribe(forwarder.channel(cluster.node_id()), forwarder.clone());
        let weak = Arc::downgrade(&forwarder);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            if let Some(forwarder) = weak.upgrade() {
                forwarder.set_handler(None);
            }
        });
        forwarder
    }

    pub fn set_handler(&self, handler: Option<Arc<dyn ForwardHandler>>) {
        if let Ok(mut slot) = self.handler.write() {
            *slot = handler;
        }
    }

    fn handler(&self) -> Option<Arc<dyn ForwardHandler>> {
        self.handler.read().ok().and_then(|h| h.clone())
    }

    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    pub fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    fn channel(&self, node: &str) -> String {
        self.cluster.key(&format!("forward:{node}"))
    }

    /// Sends `request` to `node` and waits up to `timeout` for its answer; counted by kind.
    pub async fn call(
        &self,
        node: &str,
        request: ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardAnswer, ForwardError> {
        let kind = request.kind;
        let answer = self.exchange(node, request, timeout).await;
        self.metrics.forwarded(kind.label(), answer.is_ok());
        answer
    }

    async fn exchange(
        &self,
        node: &str,
        request: ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardAnswer, ForwardError> {
        if self.waiting.len() >= MAX_WAITING {
            return Err(ForwardError::Unavailable(
                "too many forwarded requests waiting".into(),
            ));
        }
        let principal = serde_json::to_string(&request.principal)
            .map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(id, tx);
        let frame = Frame::Forward {
            request: id,
            kind: request.kind.code(),
            hub: request.hub,
            token: request.token,
            principal,
            body: request.body,
        };
        let answer = match self.cluster.send_counted(self.channel(node), frame) {
            Err(err) => Err(ForwardError::Unavailable(err.0)),
            Ok(receivers) => {
                let deadline = tokio::time::Instant::now() + timeout;
                match tokio::time::timeout_at(deadline, receivers).await {
                    // Nobody listens on the node's channel: it is gone (or not started).
                    Ok(Ok(Ok(0))) => Err(ForwardError::Gone(node.to_string())),
                    Ok(Ok(Err(err))) => Err(ForwardError::Unavailable(err.0)),
                    _ => self.answer_of(node, rx, deadline).await,
                }
            }
        };
        self.waiting.remove(&id);
        answer
    }

    /// Waits for `node`'s answer until `deadline`, checking every [`LISTENING_CHECK`] that
    /// the node still listens: one killed while it serves the request (a long poll waits up to
    /// the poll timeout) is given up on then, not at the deadline.
    async fn answer_of(
        &self,
        node: &str,
        mut answer: oneshot::Receiver<ForwardAnswer>,
        deadline: tokio::time::Instant,
    ) -> Result<ForwardAnswer, ForwardError> {
        let mut check = tokio::time::interval_at(
            tokio::time::Instant::now() + LISTENING_CHECK,
            LISTENING_CHECK,
        );
        loop {
            tokio::select! {
                answered = &mut answer => {
                    return answered.map_err(|_| ForwardError::NoAnswer(node.to_string()));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ForwardError::NoAnswer(node.to_string()));
                }
                _ = check.tick() => {
                    if !self.listening(node).await {
                        return Err(ForwardError::Gone(node.to_string()));
                    }
                }
            }
        }
    }

    /// Whether anything listens on `node`'s forwarding channel (`PUBSUB NUMSUB`), asked of
    /// Redis at most once a second per node however many requests wait for it. Redis not
    /// answering is no evidence that the node is gone.
    async fn listening(&self, node: &str) -> bool {
        if let Some(listening) = self.listening.get(node) {
            return listening;
        }
        let mut commands = self.cluster.commands();
        let counts: redis::RedisResult<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(self.channel(node))
            .query_async(&mut commands)
            .await;
        let Ok((_, listeners)) = counts else {
            return true;
        };
        self.listening.insert(node.to_string(), listeners > 0);
        listeners > 0
    }

    /// Runs a forwarded request on its own task (a long poll waits) and answers `from`.
    fn serve(&self, from: String, request: u64, forwarded: ForwardRequestFrame) {
        let reply_to = self.channel(&from);
        let cluster = self.cluster.clone();
        let handler = self.handler();
        let permit = self.serving.clone().try_acquire_owned();
        tokio::spawn(async move {
            let answer = match (handler, permit, forwarded.decode()) {
                (Some(handler), Ok(_permit), Some(request)) => handler.handle(&from, request).await,
                (_, _, None) => {
                    tracing::warn!(%from, "ignoring an unreadable forwarded request");
                    return;
                }
                _ => ForwardAnswer::busy(),
            };
            let frame = Frame::Forwarded {
                request,
                status: answer.status,
                content_type: answer.content_type,
                body: answer.body,
                headers: answer.headers,
            };
            if let Err(err) = cluster.send(reply_to, frame) {
                tracing::warn!(error = %err, %from, "cannot answer a forwarded request");
            }
        });
    }

    /// Counts one more request of `sub`'s as forwarded and waiting, until the guard drops;
    /// refused when `sub` has `limit` already.
    pub fn begin_forwarding(
        self: &Arc<Self>,
        sub: &str,
        limit: usize,
    ) -> Result<Forwarding, TooManyForwarded> {
        let mut waiting = self.per_user.entry(sub.to_string()).or_insert(0);
        if *waiting >= limit {
            return Err(TooManyForwarded(limit));
        }
        *waiting += 1;
        Ok(Forwarding {
            forwarder: self.clone(),
            sub: sub.to_string(),
        })
    }

    /// Marks `token` as being adopted here until the guard drops (once the connection is
    /// registered, or the adoption failed).
    pub fn begin_adopting(self: &Arc<Self>, token: &str) -> Adopting {
        let fresh = match self.adopting.entry(token.to_string()) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(slot) => {
                slot.insert(watch::channel(()).0);
                true
            }
        };
        Adopting {
            forwarder: self.clone(),
            token: fresh.then(|| token.to_string()),
        }
    }

    /// Waits (at most `timeout`) until an adoption of `token` under way here has settled.
    pub async fn settled(&self, token: &str, timeout: Duration) {
        let Some(mut adopted) = self.adopting.get(token).map(|s| s.subscribe()) else {
            return;
        };
        let _ = tokio::time::timeout(timeout, adopted.changed()).await;
    }

    /// Remembers, for a short while, that the connection `token` went to `node`.
    pub fn remember_handover(&self, token: &str, node: &str) {
        self.handed_over.insert(token.to_string(), node.to_string());
    }

    /// The node this one handed the connection `token` to lately, if it did.
    pub fn handed_over(&self, token: &str) -> Option<String> {
        self.handed_over.get(token)
    }

    /// The node that adopted the connection `token`, per the directory.
    pub async fn owner_of_token(&self, token: &str) -> Result<Option<String>, ForwardError> {
        owner(&self.cluster, token_key(&self.cluster, token)).await
    }

    /// Writes this node as the owner of the connection (`id`, `token`) and keeps the entries
    /// alive until `released` is cancelled (the connection left the registry), then deletes
    /// them. Returns once the first write is done: fails if Redis does not take it.
    pub async fn own(
        &self,
        id: &str,
        token: &str,
        released: CancellationToken,
    ) -> Result<(), ForwardError> {
        let keys = [id_key(&self.cluster, id), token_key(&self.cluster, token)];
        claim(&self.cluster, &keys)
            .await
            .map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(OWNER_REFRESH);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = released.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(err) = claim(&cluster, &keys).await {
                            tracing::debug!(error = %err, "cannot refresh a connection's owner entry");
                        }
                    }
                }
            }
            let mut commands = cluster.commands();
            let deleted: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut commands)
                .await;
            if let Err(err) = deleted {
                tracing::debug!(error = %err, "cannot delete a connection's owner entry; it expires");
            }
        });
        Ok(())
    }
}

/// The node that adopted the connection `id`, per the directory.
pub async fn owner_of_id(cluster: &Cluster, id: &str) -> Result<Option<String>, ForwardError> {
    owner(cluster, id_key(cluster, id)).await
}

fn id_key(cluster: &Cluster, id: &str) -> String {
    cluster.key(&format!("owner:{id}"))
}

/// The token's key holds a hash of it: a connection token is a secret.
fn token_key(cluster: &Cluster, token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    cluster.key(&format!("owner-token:{hex}"))
}

async fn owner(cluster: &Cluster, key: String) -> Result<Option<String>, ForwardError> {
    let mut commands = cluster.commands();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut commands)
        .await
        .map_err(|e| ForwardError::Unavailable(e.to_string()))
}

async fn claim(cluster: &Cluster, keys: &[String; 2]) -> redis::RedisResult<()> {
    let ttl = u64::try_from(OWNER_TTL.as_millis()).unwrap_or(u64::MAX);
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("SET")
            .arg(key)
            .arg(cluster.node_id())
            .arg("PX")
            .arg(ttl)
            .ignore();
    }
    let mut commands = cluster.commands();
    pipe.query_async(&mut commands).await
}

/// A `Forward` frame's fields, decoded on the serving task.
struct ForwardRequestFrame {
    kind: u8,
    hub: String,
    token: String,
    principal: String,
    body: Bytes,
}

impl ForwardRequestFrame {
    fn decode(self) -> Option<ForwardRequest> {
        Some(ForwardRequest {
            kind: ForwardKind::from_code(self.kind)?,
            hub: self.hub,
            token: self.token,
            principal: serde_json::from_str(&self.principal).ok()?,
            body: self.body,
        })
    }
}

#[async_trait::async_trait]
impl Subscriber for Forwarder {
    async fn receive(&self, _channel: &str, origin: Origin, frame: Frame) {
        match frame {
            Frame::Forwarded {
                request,
                status,
                content_type,
                body,
                headers,
            } => {
                if let Some((_, waiter)) = self.waiting.remove(&request) {
                    let _ = waiter.send(ForwardAnswer {
                        status,
                        content_type,
                        body,
                        headers,
                    });
                }
            }
            Frame::Forward {
                request,
                kind,
                hub,
                token,
                principal,
                body,
            } => self.serve(
                origin.node,
                request,
                ForwardRequestFrame {
                    kind,
                    hub,
                    token,
                    principal,
                    body,
                },
            ),
            Frame::Tunnel {
                tunnel,
                to_owner,
                event,
                body,
            } => self
                .tunnels
                .deliver(origin.node, tunnel, to_owner, event, body),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_its_code_and_unknown_codes_are_refused() {
        for kind in ForwardKind::ALL {
            assert_eq!(ForwardKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ForwardKind::from_code(0), None);
        assert_eq!(ForwardKind::from_code(8), None);
    }

    #[test]
    fn a_busy_owner_says_when_to_retry() {
        let busy = ForwardAnswer::busy();
        assert_eq!(busy.status, 503);
        assert_eq!(busy.headers, vec![("retry-after".into(), "1".into())]);
        assert!(busy
            .headers
            .iter()
            .all(|(name, _)| CARRIED_HEADERS.contains(&name.as_str())));
    }
}
