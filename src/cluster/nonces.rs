//! Replay protection every node shares: a nonce is recorded in Redis with `SET key 1 NX PX`
//! for the rest of its envelope's validity, so an envelope accepted on one node is
//! `replayed_nonce` on every other.
//!
//! Each scope (a login session) may hold at most `envelope.max_nonces_per_session` unexpired
//! nonces across the cluster, as on a single node (`nonce_quota_exceeded`): the scope's nonces
//! are also kept in a sorted set by expiry, and one Lua script drops the expired, counts,
//! and records the nonce, atomically, so two nodes cannot both take the last slot. A client
//! cannot grow Redis beyond its quota.
//!
//! It fails closed: while Redis cannot answer, [`NonceStoreError::Unavailable`] refuses the
//! envelope (`replay_check_unavailable`), since accepting it unrecorded would let it be
//! replayed elsewhere. The verifier asks only after the signature holds, so a forged envelope
//! never burns a nonce (nor a slot of the quota) here either.

use super::Cluster;
use crate::envelope::{NonceStore, NonceStoreError};
use futures_util::future::BoxFuture;
use std::sync::{Arc, LazyLock};

/// KEYS: the nonce, the scope's set. ARGV: now (ms), expiry (ms), remaining (ms), quota,
/// nonce. Answers 1 (recorded), 0 (a replay), -1 (the scope holds its quota).
static RECORD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('SET', KEYS[1], 1, 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"#,
    )
});

pub struct RedisNonceStore {
    cluster: Arc<Cluster>,
    scope_quota: u64,
}

impl RedisNonceStore {
    /// A store allowing each scope `scope_quota` unexpired nonces.
    pub fn new(cluster: Arc<Cluster>, scope_quota: u64) -> Self {
        Self {
            cluster,
            scope_quota,
        }
    }

    /// The key of `nonce` in `scope`; the scope's length keeps `a:b` + `c` apart from `a` +
    /// `b:c`.
    fn key(&self, scope: &str, nonce: &str) -> String {
        self.cluster
            .key(&format!("nonce:{}:{scope}:{nonce}", scope.len()))
    }

    /// The sorted set of `scope`'s unexpired nonces.
    fn scope_key(&self, scope: &str) -> String {
        self.cluster.key(&format!("nonces:{scope}"))
    }
}

impl NonceStore for RedisNonceStore {
    fn insert_if_absent<'a>(
        &'a self,
        scope: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
    ) -> BoxFuture<'a, Result<bool, NonceStoreError>> {
        Box::pin(async move {
            let now = crate::envelope::unix_now_ms();
            // A relative expiry for the nonce, so Redis's clock need not agree with ours; the
            // set's scores are the nodes' clocks, which agree within the envelope's skew.
            let remaining = expires_at_ms.saturating_sub(now).max(1);
            let mut commands = self.cluster.commands();
            let answer: i64 = RECORD
                .key(self.key(scope, nonce))
                .key(self.scope_key(scope))
                .arg(now)
                .arg(now.saturating_add(remaining))
                .arg(remaining)
                .arg(self.scope_quota)
                .arg(nonce)
                .invoke_async(&mut commands)
                .await
                .map_err(|e| NonceStoreError::Unavailable(Box::new(e)))?;
            match answer {
                1 => Ok(true),
                0 => Ok(false),
                _ => Err(NonceStoreError::ScopeFull {
                    quota: self.scope_quota,
                }),
            }
        })
    }
}
