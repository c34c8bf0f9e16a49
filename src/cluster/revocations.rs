//! Revocations across the cluster, also between nodes that share no store: every record this
//! node makes (logout, refresh-token reuse, an admin's revocation, a device removed or
//! re-keyed, ...) is kept in Redis and published on `{prefix}:revocations`, and every other
//! node puts it in force at once, as it does a shared store's feed record (cause `recorded`,
//! not written to its own store).
//!
//! Pub/sub is at most once, so the records are also kept in Redis, each as long as a token it
//! refuses can live: `{prefix}:revoked:tokens` and `{prefix}:revoked:sessions` (sorted sets of
//! `jti` / `sid` by the Unix second they may be forgotten), `{prefix}:revoked:cutoffs` (subjects
//! by the same; a user's cut-off is kept for good, as in the store) with their `not_before` in
//! the hash `{prefix}:revoked:not_before`. One Lua script stores a batch, drops what expired,
//! sets the keys' expiry to their last member's, and publishes, so a record is in Redis before
//! any node can hear of it.
//!
//! Fail closed: until the channel's subscription is confirmed, and from its loss (the
//! connection broke, Redis stopped answering) until it is confirmed again *and* every record
//! in Redis is reloaded, this node's revocation checks answer `StoreUnavailable` for tokens not
//! known to be revoked. On each (re)subscription the node first writes its own store's records
//! back (Redis may have restarted empty), then reloads. Records made while Redis is down wait
//! in a bounded queue and are written, in order, once it answers; if the queue overflows, the
//! whole store is written and published instead.

use super::wire::{Frame, Origin};
use super::{Cluster, Subscriber};
use crate::auth::{FeedSource, InProcessRevocations, RevocationRelay};
use crate::store::{FeedEvent, RevocationRecord, RevocationSnapshot, SubjectCutoff};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Records made here and not yet in Redis, at most; beyond it the whole store is written.
const QUEUE: usize = 4_096;
/// Records stored (and published) per script call, at most.
const BATCH: usize = 256;
/// How long to wait before trying Redis again.
const RETRY: Duration = Duration::from_millis(500);
/// The score of a cut-off kept for good: far beyond any Unix second, still exact in a double.
const FOREVER: i64 = 9_000_000_000_000_000;

/// KEYS: tokens, sessions, cut-offs, not_before. ARGV: now (s), channel, frame ('' publishes
/// nothing), then per record: kind (j, s, c), name, until, not_before.
static STORE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
for i = 4, #ARGV, 4 do
  local kind, name, until_, nb = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if kind == 'c' then
    redis.call('ZADD', KEYS[3], 'GT', until_, name)
    local current = redis.call('HGET', KEYS[4], name)
    if not current or tonumber(current) < tonumber(nb) then
      redis.call('HSET', KEYS[4], name, nb)
    end
  elseif kind == 's' then
    redis.call('ZADD', KEYS[2], 'GT', until_, name)
  else
    redis.call('ZADD', KEYS[1], 'GT', until_, name)
  end
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
for _, sub in ipairs(gone) do redis.call('HDEL', KEYS[4], sub) end
for k = 1, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', '(' .. ARGV[1])
  local last = redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')
  if last[2] then
    if tonumber(last[2]) >= 9e15 then
      redis.call('PERSIST', KEYS[k])
    else
      redis.call('EXPIREAT', KEYS[k], math.floor(tonumber(last[2])) + 1)
    end
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local ttl = redis.call('TTL', KEYS[3])
  if ttl > 0 then redis.call('EXPIRE', KEYS[4], ttl) else redis.call('PERSIST', KEYS[4]) end
else
  redis.call('DEL', KEYS[4])
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
"#,
    )
});

/// KEYS: as [`STORE`]. ARGV: now (s). Answers every record in force, flat: kind, name, until,
/// not_before ('' but for cut-offs).
static LOAD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local out = {}
for k, kind in ipairs({'j', 's', 'c'}) do
  local rows = redis.call('ZRANGEBYSCORE', KEYS[k], ARGV[1], '+inf', 'WITHSCORES')
  for r = 1, #rows, 2 do
    local nb = ''
    if kind == 'c' then nb = redis.call('HGET', KEYS[4], rows[r]) end
    if nb then
      table.insert(out, kind)
      table.insert(out, rows[r])
      table.insert(out, rows[r + 1])
      table.insert(out, nb)
    end
  end
end
return out
"#,
    )
});

/// This node's end of the cluster's revocations; see the module documentation.
pub struct RedisRevocations {
    cluster: Arc<Cluster>,
    revocations: Arc<InProcessRevocations>,
    channel: String,
    queue: mpsc::Sender<RevocationRecord>,
    /// The queue overflowed: write (and publish) the whole store.
    overflowed: AtomicBool,
    /// Set by a confirmed subscription: write the store back and reload.
    resync: Notify,
    /// Counts losses, so a reload that raced a loss does not claim to be in sync.
    losses: AtomicU64,
    /// The last sequence number published on the channel.
    sequence: AtomicU64,
}

impl RedisRevocations {
    /// Hands `revocations`' own records to the cluster and the cluster's to it; counts the
    /// cluster's feed as lost until the first subscription is confirmed and reloaded. Its task
    /// ends with `shutdown`.
    pub fn start(
        cluster: Arc<Cluster>,
        revocations: Arc<InProcessRevocations>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (queue, queued) = mpsc::channel(QUEUE);
        let this = Arc::new(Self {
            channel: cluster.key("revocations"),
            cluster: cluster.clone(),
            revocations: revocations.clone(),
            queue,
            overflowed: AtomicBool::new(false),
            resync: Notify::new(),
            losses: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
        });
        revocations.await_feed(FeedSource::Cluster);
        revocations.relay_to(this.clone());
        cluster.subscribe(this.channel.clone(), this.clone());
        tokio::spawn(this.clone().run(queued, shutdown));
        this
    }

    fn key(&self, name: &str) -> String {
        self.cluster.key(&format!("revoked:{name}"))
    }

    /// Writes the queued records in order, and writes back and reloads on every confirmed
    /// subscription, retrying each until Redis answers.
    async fn run(
        self: Arc<Self>,
        mut queued: mpsc::Receiver<RevocationRecord>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.resync.notified() => {
                    while let Err(err) = self.resync_once().await {
                        tracing::warn!(error = %err, "cannot reload the cluster's revocations yet");
                        if pause(&shutdown).await { return; }
                    }
                }
                received = queued.recv_many(&mut batch, BATCH) => {
                    if received == 0 { return; }
                    while let Err(err) = self.store(&batch, true).await {
                        tracing::warn!(error = %err, records = batch.len(), "cannot hand revocations to the cluster yet; retrying");
                        if pause(&shutdown).await { return; }
                    }
                    batch.clear();
                }
            }
            if self.overflowed.swap(false, Ordering::AcqRel) {
                self.resend_store(&shutdown).await;
            }
        }
    }

    /// After an overflow: every record of the store, written and published.
    async fn resend_store(&self, shutdown: &CancellationToken) {
        loop {
            let sent = match self.revocations.logged().await {
                Ok(snapshot) => self.store_all(snapshot, true).await,
                Err(err) => Err(err.to_string()),
            };
            match sent {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot hand revocations to the cluster yet; retrying")
                }
            }
            if pause(shutdown).await {
                return;
            }
        }
    }

    /// Writes this node's store back to Redis (unpublished: the other nodes have them or will
    /// reload them), then reloads every record in Redis and, unless the subscription was lost
    /// meanwhile, counts the feed in sync.
    async fn resync_once(&self) -> Result<(), String> {
        let losses = self.losses.load(Ordering::Acquire);
        let own = self.revocations.logged().await.map_err(|e| e.to_string())?;
        self.store_all(own, false).await?;
        let snapshot = self.load().await.map_err(|e| e.to_string())?;
        if self.losses.load(Ordering::Acquire) == losses {
            self.revocations
                .follow_feed(FeedSource::Cluster, FeedEvent::InSync(snapshot));
        } else {
            // Lost again meanwhile: in force, but the next confirmation decides.
            for record in snapshot.into_records() {
                self.revocations
                    .follow_feed(FeedSource::Cluster, FeedEvent::Record(record));
            }
        }
        Ok(())
    }

    async fn store_all(&self, snapshot: RevocationSnapshot, publish: bool) -> Result<(), String> {
        let records: Vec<RevocationRecord> = snapshot.into_records().collect();
        for chunk in records.chunks(BATCH) {
            self.store(chunk, publish)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Stores `records` and, with `publish`, announces them on the channel, in one script.
    async fn store(&self, records: &[RevocationRecord], publish: bool) -> redis::RedisResult<()> {
        let sequence = self.sequence.load(Ordering::Acquire) + 1;
        let frame = if publish {
            let origin = Origin {
                node: self.cluster.node_id().to_string(),
                epoch: self.cluster.epoch(),
                sequence,
            };
            super::wire::encode(&origin, &Frame::Revocations(records.to_vec())).to_vec()
        } else {
            Vec::new()
        };
        let mut invocation = STORE.prepare_invoke();
        invocation
            .key(self.key("tokens"))
            .key(self.key("sessions"))
            .key(self.key("cutoffs"))
            .key(self.key("not_before"))
            .arg(crate::auth::issue::unix_now())
            .arg(&self.channel)
            .arg(frame);
        for record in records {
            let (kind, name, until, not_before) = fields(record);
            invocation.arg(kind).arg(name).arg(until).arg(not_before);
        }
        let mut commands = self.cluster.commands();
        let _: i64 = invocation.invoke_async(&mut commands).await?;
        if publish {
            // Numbered only once published, so a failed attempt leaves no gap.
            self.sequence.store(sequence, Ordering::Release);
            let stats = self.cluster.stats();
            stats.publishes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every record in force in Redis.
    async fn load(&self) -> redis::RedisResult<RevocationSnapshot> {
        let mut commands = self.cluster.commands();
        let flat: Vec<String> = LOAD
            .key(self.key("tokens"))
            .key(self.key("sessions"))
            .key(self.key("cutoffs"))
            .key(self.key("not_before"))
            .arg(crate::auth::issue::unix_now())
            .invoke_async(&mut commands)
            .await?;
        let mut snapshot = RevocationSnapshot::default();
        for row in flat.chunks_exact(4) {
            let (name, until) = (row[1].clone(), seconds(&row[2]));
            match row[0].as_str() {
                "j" => snapshot.denied_tokens.push((name, until)),
                "s" => snapshot.revoked_sessions.push((name, until)),
                _ => snapshot.cutoffs.push(SubjectCutoff {
                    sub: name,
                    not_before: seconds(&row[3]),
                    forget_after: (until < FOREVER).then_some(until),
                }),
            }
        }
        Ok(snapshot)
    }
}

/// Waits [`RETRY`]; true when `shutdown` came first.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(RETRY) => false,
    }
}

/// A record as the script's arguments: kind, name, until (its score), not_before.
fn fields(record: &RevocationRecord) -> (&'static str, &str, i64, i64) {
    match record {
        RevocationRecord::DeniedToken { jti, expires_at } => ("j", jti, *expires_at, 0),
        RevocationRecord::RevokedSession { sid, forget_after } => ("s", sid, *forget_after, 0),
        RevocationRecord::Cutoff(cutoff) => (
            "c",
            &cutoff.sub,
            cutoff.forget_after.unwrap_or(FOREVER).min(FOREVER),
            cutoff.not_before,
        ),
    }
}

/// A Unix second as Redis wrote it (a score may read `1.7e9`-style or with a fraction); a
/// value that does not parse reads as the most refusing one, far in the future.
fn seconds(text: &str) -> i64 {
    text.parse::<i64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
        .unwrap_or(i64::MAX)
}

impl RevocationRelay for RedisRevocations {
    fn relay(&self, record: RevocationRecord) {
        if self.queue.try_send(record).is_err() && !self.overflowed.swap(true, Ordering::AcqRel) {
            tracing::error!(
                capacity = QUEUE,
                "too many revocations wait for Redis; the whole store is handed on once it answers"
            );
        }
    }
}

#[async_trait]
impl Subscriber for RedisRevocations {
    async fn receive(&self, _channel: &str, _origin: Origin, frame: Frame) {
        if let Frame::Revocations(records) = frame {
            for record in records {
                self.revocations
                    .follow_feed(FeedSource::Cluster, FeedEvent::Record(record));
            }
        }
    }

    fn lost(&self) {
        self.losses.fetch_add(1, Ordering::AcqRel);
        self.revocations
            .follow_feed(FeedSource::Cluster, FeedEvent::Lost);
    }

    fn subscribed(&self) {
        self.resync.notify_one();
    }
}
