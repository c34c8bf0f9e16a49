//! Several Signet nodes over one Redis (`[cluster] redis_url`): the connections to Redis, the
//! node's identity, and the pump that hands what other nodes publish to this node's
//! subscribers. [`RedisLifetimeManager`] builds the hub backplane on it, [`RedisNonceStore`]
//! the replay protection every node shares, [`RedisRevocations`] the revocations, and
//! [`Backplane`] an application hub's own keys, scripts and channels (the home hub's pending
//! commands and telemetry among them).
//!
//! Two connections per node, both [`ConnectionManager`]s that reconnect on their own: one for
//! commands (publish, presence), one for subscriptions over RESP3 pushes, which the client
//! resubscribes after a reconnect. A node starts without Redis and keeps trying: a keeper
//! pings the subscription connection every half second (so it reconnects soon after Redis
//! returns) and retries subscriptions never confirmed.

mod backplane;
pub mod forward;
mod lifetime;
mod nonces;
mod revocations;
pub mod tunnel;
pub mod wire;

pub use backplane::{Backplane, BackplaneScript, BackplaneValue, ScriptCall};
pub use forward::Forwarder;
pub use lifetime::RedisLifetimeManager;
pub use nonces::RedisNonceStore;
pub use revocations::RedisRevocations;
use wire::{Frame, Origin};

use crate::hub::BackplaneError;
use crate::metrics::Metrics;
use crate::settings::ClusterSettings;
use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The first segments of Signet's own channels and keys (`{prefix}:{name}...`): the
/// forwarding channels and the ownership directory ([`forward`]), revocations, and nonces. A
/// hub's channels and keys begin with its name, so no hub may take one of these (a new
/// segment goes here).
pub const RESERVED_NAMES: [&str; 7] = [
    "forward",
    "owner",
    "owner-token",
    "revocations",
    "revoked",
    "nonce",
    "nonces",
];

/// Messages received and not yet handled, at most; more are dropped (and then show up as
/// sequence gaps).
const INBOX_CAPACITY: usize = 65_536;
/// How often the keeper checks the subscription connection.
const KEEP_INTERVAL: Duration = Duration::from_millis(500);
/// How long a Redis command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames waiting for the publisher, at most; a send beyond it fails.
const OUTBOX_CAPACITY: usize = 16_384;
/// Frames the publisher sends to Redis in one pipeline, at most.
const BATCH: usize = 256;
/// A sender not heard from for this long is forgotten (its next message starts afresh).
const SENDER_MEMORY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis_url: {0}")]
    Client(#[from] redis::RedisError),
}

/// What one channel's messages go to, decoded, in the order they came, on the pump task:
/// quick work only (local sends never wait for a client). This node's own messages are not
/// handed back.
#[async_trait::async_trait]
pub trait Subscriber: Send + Sync {
    async fn receive(&self, channel: &str, origin: Origin, frame: Frame);
    /// The subscription was lost (the connection broke, or Redis stopped answering): what
    /// others publish may be missed until [`Self::subscribed`].
    fn lost(&self) {}
    /// Redis confirmed the subscription (at start, and again after every loss): from now on
    /// nothing published is missed while the connection holds.
    fn subscribed(&self) {}
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub publishes: AtomicU64,
    pub publish_errors: AtomicU64,
    pub receives: AtomicU64,
    pub gaps: AtomicU64,
    pub reconnects: AtomicU64,
}

/// This node's place in the cluster and its two Redis connections.
pub struct Cluster {
    node_id: String,
    /// Random per process: a restart under the same node id starts new sequences.
    epoch: u64,
    prefix: String,
    commands: ConnectionManager,
    subscriber: ConnectionManager,
    subscribers: DashMap<String, Subscription>,
    outbox: mpsc::Sender<Outgoing>,
    /// (channel, sender node) -> (epoch, last sequence, when), for gap detection.
    received: DashMap<(String, String), (u64, u64, tokio::time::Instant)>,
    stats: ClusterStats,
}

struct Subscription {
    handler: Arc<dyn Subscriber>,
    confirmed: Arc<AtomicBool>,
}

/// A frame for the publisher, and who wants to know how many subscribers Redis delivered it to.
struct Outgoing {
    channel: String,
    frame: Frame,
    receivers: Option<oneshot::Sender<Result<u64, BackplaneError>>>,
}

/// What [`Cluster::send_counted`] reports once the frame is published: how many subscribers
/// of its channel Redis delivered it to (`PUBLISH`'s answer), or why it was not published.
/// Dropped unanswered when the node shuts down.
pub type Receivers = oneshot::Receiver<Result<u64, BackplaneError>>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Sets up both connections without waiting for Redis (it may be down at start-up), and
    /// starts the pump and the keeper, which end with `shutdown`. `node_id` is resolved
    /// (generated when not configured) by the caller.
    pub fn start(
        settings: &ClusterSettings,
        url: &str,
        node_id: String,
        metrics: &Metrics,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        info = info.set_redis_settings(redis_settings);
        let client = redis::Client::open(info)?;
        let base = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), base.clone())?;
        let (pushes, inbox) = mpsc::channel::<PushInfo>(INBOX_CAPACITY);
        let cluster_stats = Arc::new(AtomicU64::new(0));
        let dropped = cluster_stats.clone();
        let subscriber = ConnectionManager::new_lazy_with_config(
            client,
            base.set_push_sender(move |push: PushInfo| {
                if pushes.try_send(push).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), ()>(())
            })
            .set_automatic_resubscription(),
        )?;
        let (outbox, queued) = mpsc::channel(OUTBOX_CAPACITY);
        let cluster = Arc::new(Self {
            node_id,
            epoch: rand::random(),
            prefix: settings.channel_prefix.clone(),
            commands,
            subscriber,
            subscribers: DashMap::new(),
            outbox,
            received: DashMap::new(),
            stats: ClusterStats::default(),
        });
        cluster.watch(metrics, cluster_stats);
        tokio::spawn(cluster.clone().pump(inbox, shutdown.clone()));
        tokio::spawn(cluster.clone().publish(queued, shutdown.clone()));
        tokio::spawn(cluster.clone().keep(shutdown));
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// `prefix:` + `name`: every channel and key Signet uses in Redis. A hub's begin with its
    /// name (`{prefix}:{hub}:...`), Signet's own with one of [`RESERVED_NAMES`].
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// A clone of the command connection (clones share one multiplexed connection).
    pub fn commands(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// Routes `channel` to `handler` and subscribes to it (now, or once Redis answers).
    pub fn subscribe(&self, channel: String, handler: Arc<dyn Subscriber>) {
        self.subscribers.insert(
            channel,
            Subscription {
                handler,
                confirmed: Arc::new(AtomicBool::new(false)),
            },
        );
    }

    /// Hands `frame` to the publisher, which numbers it on `channel` and publishes it in
    /// order. `Ok` once queued: a publish cannot know who received it.
    pub fn send(&self, channel: String, frame: Frame) -> Result<(), BackplaneError> {
        self.enqueue(channel, frame, None)
    }

    /// As [`Self::send`], for a frame meant for one node: reports how many subscribers of
    /// `channel` received it, so that a node that is gone (nobody listens on its channel) is
    /// known at once instead of by a silence.
    pub fn send_counted(&self, channel: String, frame: Frame) -> Result<Receivers, BackplaneError> {
        let (report, receivers) = oneshot::channel();
        self.enqueue(channel, frame, Some(report))?;
        Ok(receivers)
    }

    fn enqueue(
        &self,
        channel: String,
        frame: Frame,
        receivers: Option<oneshot::Sender<Result<u64, BackplaneError>>>,
    ) -> Result<(), BackplaneError> {
        let outgoing = Outgoing {
            channel,
            frame,
            receivers,
        };
        self.outbox
            .try_send(outgoing)
            .map_err(|_| BackplaneError("the backplane's outbox is full".into()))
    }

    fn watch(self: &Arc<Self>, metrics: &Metrics, dropped: Arc<AtomicU64>) {
        type Read = fn(&ClusterStats) -> &AtomicU64;
        let counters: [(&'static str, &'static str, Read); 5] = [
            (
                "signet_cluster_publishes",
                "Messages this node published to the backplane (since start).",
                |s| &s.publishes,
            ),
            (
                "signet_cluster_publish_errors",
                "Publishes to the backplane that failed (since start).",
                |s| &s.publish_errors,
            ),
            (
                "signet_cluster_receives",
                "Backplane messages this node received (since start).",
                |s| &s.receives,
            ),
            (
                "signet_cluster_gaps",
                "Backplane messages found missing by their sequence numbers (since start).",
                |s| &s.gaps,
            ),
            (
                "signet_cluster_reconnects",
                "Times the subscription connection to Redis was lost (since start).",
                |s| &s.reconnects,
            ),
        ];
        for (name, help, read) in counters {
            let cluster = Arc::downgrade(self);
            metrics.watch_gauge(name, help, move || {
                cluster.upgrade().map_or(0, |c| {
                    i64::try_from(read(&c.stats).load(Ordering::Relaxed)).unwrap_or(i64::MAX)
                })
            });
        }
        metrics.watch_gauge(
            "signet_cluster_dropped",
            "Backplane messages dropped because this node's inbox was full (since start).",
            move || i64::try_from(dropped.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
    }

    async fn pump(
        self: Arc<Self>,
        mut inbox: mpsc::Receiver<PushInfo>,
        shutdown: CancellationToken,
    ) {
        loop {
            let push = tokio::select! {
                _ = shutdown.cancelled() => return,
                push = inbox.recv() => match push {
                    Some(push) => push,
                    None => return,
                },
            };
            match push.kind {
                PushKind::Message => {
                    let mut data = push.data.into_iter();
                    let (Some(channel), Some(message)) = (data.next(), data.next()) else {
                        continue;
                    };
                    let (Some(channel), Some(message)) = (text(channel), bytes(message)) else {
                        continue;
                    };
                    self.stats.receives.fetch_add(1, Ordering::Relaxed);
                    self.deliver(channel, message).await;
                }
                PushKind::Disconnection => {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        node = %self.node_id,
                        "lost the Redis subscription connection; reconnecting and resubscribing"
                    );
                    self.lose_subscriptions();
                }
                _ => {}
            }
        }
    }

    async fn deliver(&self, channel: String, message: bytes::Bytes) {
        let (origin, frame) = match wire::decode(message) {
            Ok(decoded) => decoded,
            Err(err) => {
                tracing::warn!(error = %err, %channel, "ignoring an unreadable backplane message");
                return;
            }
        };
        if origin.node == self.node_id && origin.epoch == self.epoch {
            // Our own broadcast, already delivered locally.
            return;
        }
        self.check_sequence(&channel, &origin);
        let handler = self.subscribers.get(&channel).map(|s| s.handler.clone());
        if let Some(handler) = handler {
            handler.receive(&channel, origin, frame).await;
        }
    }

    /// Checks `origin`'s sequence on `channel`: counts and logs what went missing.
    fn check_sequence(&self, channel: &str, origin: &Origin) {
        let now = tokio::time::Instant::now();
        let key = (channel.to_string(), origin.node.clone());
        let previous = self
            .received
            .insert(key, (origin.epoch, origin.sequence, now));
        if let Some((epoch, last, _)) = previous {
            if epoch == origin.epoch && origin.sequence > last + 1 {
                let missing = origin.sequence - last - 1;
                self.stats.gaps.fetch_add(missing, Ordering::Relaxed);
                tracing::warn!(
                    from = %origin.node,
                    %channel,
                    missing,
                    "backplane messages were lost (pub/sub is at most once)"
                );
            }
        }
    }

    /// The one task that numbers and publishes this node's frames, in order, batched.
    /// The one task that numbers and publishes this node's frames, in order, batched. The
    /// receiver counts of the frames that asked for them are the pipeline's only answers.
    async fn publish(
        self: Arc<Self>,
        mut queued: mpsc::Receiver<Outgoing>,
        shutdown: CancellationToken,
    ) {
        let mut sequences: HashMap<String, u64> = HashMap::new();
        let mut failing = false;
        let mut batch = Vec::with_capacity(BATCH);
        let mut reports = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = queued.recv_many(&mut batch, BATCH) => if received == 0 { return },
            }
            // Channels are two per hub and one per live node: a bound, but keep it one.
            if sequences.len() > 4 * BATCH {
                sequences.clear();
            }
            let mut pipe = redis::pipe();
            for outgoing in batch.drain(..) {
                let sequence = sequences.entry(outgoing.channel.clone()).or_insert(0);
                *sequence += 1;
                let origin = Origin {
                    node: self.node_id().to_string(),
                    epoch: self.epoch(),
                    sequence: *sequence,
                };
                pipe.cmd("PUBLISH")
                    .arg(outgoing.channel)
                    .arg(wire::encode(&origin, &outgoing.frame).as_ref());
                match outgoing.receivers {
                    Some(report) => reports.push(report),
                    None => {
                        pipe.ignore();
                    }
                }
            }
            let sent = pipe.len() as u64;
            let mut commands = self.commands();
            let result: redis::RedisResult<Vec<u64>> = pipe.query_async(&mut commands).await;
            let stats = self.stats();
            match result {
                Ok(counts) => {
                    stats.publishes.fetch_add(sent, Ordering::Relaxed);
                    for (report, count) in reports.drain(..).zip(counts) {
                        let _ = report.send(Ok(count));
                    }
                    if std::mem::take(&mut failing) {
                        tracing::info!("publishing to the backplane again");
                    }
                }
                Err(err) => {
                    stats.publish_errors.fetch_add(sent, Ordering::Relaxed);
                    for report in reports.drain(..) {
                        let _ = report.send(Err(BackplaneError(err.to_string())));
                    }
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %err, "cannot publish to the backplane; messages to other nodes are lost until Redis answers");
                    }
                }
            }
            // Whatever the answer held, no report outlives its batch.
            reports.clear();
        }
    }

    /// Keeps the subscription connection alive (a ping reconnects it when it broke) and
    /// subscribes what is not yet confirmed.
    async fn keep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(KEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reachable = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut subscriber = self.subscriber.clone();
            let ping: redis::RedisResult<Value> =
                redis::cmd("PING").query_async(&mut subscriber).await;
            match (&ping, reachable) {
                (Err(err), true) => {
                    tracing::warn!(error = %err, "Redis is unreachable; retrying");
                    reachable = false;
                }
                (Ok(_), false) => {
                    tracing::info!("Redis is reachable again");
                    reachable = true;
                }
                _ => {}
            }
            // The senders heard from lately: the map stays as small as the cluster.
            self.received
                .retain(|_, (_, _, seen)| seen.elapsed() < SENDER_MEMORY);
            if ping.is_err() {
                // Whatever was published meanwhile may be missed: subscribe again once Redis
                // answers (after a reconnect the client resubscribes too; twice is harmless).
                self.lose_subscriptions();
                continue;
            }
            self.confirm_subscriptions(&mut subscriber).await;
        }
    }

    /// Subscribes every channel not confirmed yet and tells its handler once Redis confirms.
    async fn confirm_subscriptions(&self, subscriber: &mut ConnectionManager) {
        type Pending = (String, Arc<AtomicBool>, Arc<dyn Subscriber>);
        let pending: Vec<Pending> = self
            .subscribers
            .iter()
            .filter(|s| !s.confirmed.load(Ordering::Acquire))
            .map(|s| (s.key().clone(), s.confirmed.clone(), s.handler.clone()))
            .collect();
        for (channel, confirmed, handler) in pending {
            match subscriber.subscribe(&channel).await {
                Ok(()) => {
                    confirmed.store(true, Ordering::Release);
                    handler.subscribed();
                }
                Err(err) => tracing::warn!(error = %err, %channel, "cannot subscribe yet"),
            }
        }
    }

    /// Marks every confirmed subscription lost and tells its handler (once per loss).
    fn lose_subscriptions(&self) {
        let lost: Vec<Arc<dyn Subscriber>> = self
            .subscribers
            .iter()
            .filter(|s| s.confirmed.swap(false, Ordering::AcqRel))
            .map(|s| s.handler.clone())
            .collect();
        for handler in lost {
            handler.lost();
        }
    }

    /// Whether this node works with the cluster: Redis answers a command and every channel is
    /// subscribed (`/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        let mut commands = self.commands.clone();
        let _: Value = redis::cmd("PING")
            .query_async(&mut commands)
            .await
            .map_err(|e| e.to_string())?;
        if !self.subscribed() {
            return Err("the node's channels are not subscribed yet".into());
        }
        Ok(())
    }

    /// Whether Redis confirmed this node's subscription to `channel` (and it was not lost
    /// since): a publish on it then counts this node among its receivers.
    pub fn listens(&self, channel: &str) -> bool {
        self.subscribers
            .get(channel)
            .is_some_and(|s| s.confirmed.load(Ordering::Acquire))
    }

    /// Whether every channel is subscribed (start-up is done); for tests and readiness.
    pub fn subscribed(&self) -> bool {
        self.subscribers
            .iter()
            .all(|s| s.confirmed.load(Ordering::Relaxed))
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn bytes(value: Value) -> Option<bytes::Bytes> {
    match value {
        Value::BulkString(b) => Some(bytes::Bytes::from(b)),
        _ => None,
    }
}
