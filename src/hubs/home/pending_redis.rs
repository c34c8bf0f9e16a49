//! Pending commands every node of a cluster shares, in Redis, so a `CommandResult` is accepted
//! once whichever node the device answers on, and the caps count the whole cluster's commands.
//!
//! Each operation is one Lua script, so it is atomic like the in-process table's lock:
//! `{prefix}:pending:cmd:{id}` (a hash: device, issuer; expiring at the command's deadline),
//! `{prefix}:pending:all` and `{prefix}:pending:issuer:{sub}` (sorted sets of the commands that
//! count, by deadline; the expired are dropped before each check, so counts are exact), and
//! `{prefix}:pending:device:{id}` (the device's counted commands). A device that goes offline
//! stops its commands counting; each stays takeable (an orphan) until its deadline.

use super::pending::{PendingCommand, PendingCommands, PendingError, PendingFull};
use crate::cluster::Cluster;
use crate::envelope::unix_now_ms;
use crate::hub::BackplaneError;
use async_trait::async_trait;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// KEYS: all, issuer set, device set, command. ARGV: now, deadline, max total, max per
/// issuer, id, device, issuer, ttl ms. Answers 0 (recorded), 1 (issuer full), 2 (server full).
static INSERT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 2 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
redis.call('HSET', KEYS[4], 'device', ARGV[6], 'issuer', ARGV[7])
redis.call('PEXPIRE', KEYS[4], ARGV[8])
return 0
"#,
    )
});

/// KEYS: command, all. ARGV: id, the device it must be for (empty: any), the issuer-set
/// prefix, the device-set prefix. Answers the issuer and device, or nil.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local found = redis.call('HMGET', KEYS[1], 'device', 'issuer')
local device, issuer = found[1], found[2]
if not device or not issuer then return false end
if ARGV[2] ~= '' and device ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', ARGV[3] .. issuer, ARGV[1])
redis.call('SREM', ARGV[4] .. device, ARGV[1])
return {device, issuer}
"#,
    )
});

/// KEYS: device set, all. ARGV: the command-key prefix, the issuer-set prefix. Stops the
/// device's commands counting; answers how many were pending.
static ORPHAN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local ids = redis.call('SMEMBERS', KEYS[1])
local pending = 0
for _, id in ipairs(ids) do
  local issuer = redis.call('HGET', ARGV[1] .. id, 'issuer')
  redis.call('ZREM', KEYS[2], id)
  if issuer then
    pending = pending + 1
    redis.call('ZREM', ARGV[2] .. issuer, id)
  end
end
redis.call('DEL', KEYS[1])
return pending
"#,
    )
});

pub struct RedisPendingCommands {
    cluster: Arc<Cluster>,
    max_total: u64,
    max_per_issuer: u64,
    timeout: Duration,
}

impl RedisPendingCommands {
    pub fn new(
        cluster: Arc<Cluster>,
        max_total: u64,
        max_per_issuer: u64,
        timeout: Duration,
    ) -> Self {
        Self {
            cluster,
            max_total,
            max_per_issuer,
            timeout,
        }
    }

    fn key(&self, name: &str) -> String {
        self.cluster.key(&format!("pending:{name}"))
    }

    async fn take_any(
        &self,
        id: &str,
        device_id: &str,
    ) -> Result<Option<PendingCommand>, PendingError> {
        let mut commands = self.cluster.commands();
        let taken: Option<(String, String)> = TAKE
            .key(self.key(&format!("cmd:{id}")))
            .key(self.key("all"))
            .arg(id)
            .arg(device_id)
            .arg(self.key("issuer:"))
            .arg(self.key("device:"))
            .invoke_async(&mut commands)
            .await
            .map_err(unavailable)?;
        Ok(taken.map(|(device_id, issuer)| PendingCommand { device_id, issuer }))
    }
}

fn unavailable(err: redis::RedisError) -> PendingError {
    PendingError::Backplane(BackplaneError(err.to_string()))
}

#[async_trait]
impl PendingCommands for RedisPendingCommands {
    async fn insert(&self, id: String, command: PendingCommand) -> Result<(), PendingError> {
        let now = unix_now_ms();
        let ttl = u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut commands = self.cluster.commands();
        let answer: u8 = INSERT
            .key(self.key("all"))
            .key(self.key(&format!("issuer:{}", command.issuer)))
            .key(self.key(&format!("device:{}", command.device_id)))
            .key(self.key(&format!("cmd:{id}")))
            .arg(now)
            .arg(now.saturating_add(ttl))
            .arg(self.max_total)
            .arg(self.max_per_issuer)
            .arg(&id)
            .arg(&command.device_id)
            .arg(&command.issuer)
            .arg(ttl)
            .invoke_async(&mut commands)
            .await
            .map_err(unavailable)?;
        match answer {
            0 => Ok(()),
            1 => Err(PendingError::Full(PendingFull::Issuer)),
            _ => Err(PendingError::Full(PendingFull::Server)),
        }
    }

    async fn take(
        &self,
        id: &str,
        device_id: &str,
    ) -> Result<Option<PendingCommand>, PendingError> {
        if device_id.is_empty() {
            return Ok(None);
        }
        self.take_any(id, device_id).await
    }

    async fn remove(&self, id: &str) -> Result<(), PendingError> {
        self.take_any(id, "").await.map(|_| ())
    }

    async fn remove_device(&self, device_id: &str) -> Result<usize, PendingError> {
        let mut commands = self.cluster.commands();
        let pending: u64 = ORPHAN
            .key(self.key(&format!("device:{device_id}")))
            .key(self.key("all"))
            .arg(self.key("cmd:"))
            .arg(self.key("issuer:"))
            .invoke_async(&mut commands)
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(pending).unwrap_or(usize::MAX))
    }
}
