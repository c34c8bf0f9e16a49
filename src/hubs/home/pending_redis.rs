//! Pending commands every node of a cluster shares, in Redis, so a `CommandResult` is accepted
//! once whichever node the device answers on, and the caps count the whole cluster's commands.
//!
//! Each operation is one Lua script on the hub's [`Backplane`], so it is atomic like the
//! in-process table's lock. Keys, in the hub's namespace (`{prefix}:{hub}:app:`):
//! `pending:cmd:{id}` (a hash: device, issuer; expiring at the command's deadline),
//! `pending:all` and `pending:issuer:{sub}` (sorted sets of the commands that count, by
//! deadline; the expired are dropped before each check, so counts are exact), and
//! `pending:device:{id}` (the device's counted commands). A device that goes offline stops its
//! commands counting; each stays takeable (an orphan) until its deadline.

use super::pending::{PendingCommand, PendingCommands, PendingError, PendingFull};
use crate::{unix_now_ms, Backplane, BackplaneScript, BackplaneValue};
use async_trait::async_trait;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: all, issuer set, device set, command. ARGV: now, deadline, max total, max per
/// issuer, id, device, issuer, ttl ms. Answers 0 (recorded), 1 (issuer full), 2 (server full).
static INSERT: LazyLock<BackplaneScript> = LazyLock::new(|| {
    BackplaneScript::new(
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
static TAKE: LazyLock<BackplaneScript> = LazyLock::new(|| {
    BackplaneScript::new(
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
static ORPHAN: LazyLock<BackplaneScript> = LazyLock::new(|| {
    BackplaneScript::new(
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

/// The cluster's table, on the hub's backplane.
pub struct RedisPendingCommands {
    backplane: Backplane,
    max_total: u64,
    max_per_issuer: u64,
    timeout: Duration,
}

impl RedisPendingCommands {
    pub fn new(
        backplane: Backplane,
        max_total: u64,
        max_per_issuer: u64,
        timeout: Duration,
    ) -> Self {
        Self {
            backplane,
            max_total,
            max_per_issuer,
            timeout,
        }
    }

    async fn take_any(
        &self,
        id: &str,
        device_id: &str,
    ) -> Result<Option<PendingCommand>, PendingError> {
        let taken = self
            .backplane
            .script(&TAKE)
            .key(&format!("pending:cmd:{id}"))
            .key("pending:all")
            .arg(id)
            .arg(device_id)
            .arg(self.backplane.key("pending:issuer:"))
            .arg(self.backplane.key("pending:device:"))
            .run()
            .await?;
        let text = |i: usize| {
            taken
                .as_array()
                .and_then(|pair| pair.get(i))
                .and_then(BackplaneValue::as_str)
                .map(str::to_string)
        };
        Ok(text(0)
            .zip(text(1))
            .map(|(device_id, issuer)| PendingCommand { device_id, issuer }))
    }
}

#[async_trait]
impl PendingCommands for RedisPendingCommands {
    async fn insert(&self, id: String, command: PendingCommand) -> Result<(), PendingError> {
        let now = unix_now_ms();
        let ttl = u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let answer = self
            .backplane
            .script(&INSERT)
            .key("pending:all")
            .key(&format!("pending:issuer:{}", command.issuer))
            .key(&format!("pending:device:{}", command.device_id))
            .key(&format!("pending:cmd:{id}"))
            .arg(now)
            .arg(now.saturating_add(ttl))
            .arg(self.max_total)
            .arg(self.max_per_issuer)
            .arg(&id)
            .arg(&command.device_id)
            .arg(&command.issuer)
            .arg(ttl)
            .run()
            .await?;
        match answer.as_integer() {
            Some(0) => Ok(()),
            Some(1) => Err(PendingError::Full(PendingFull::Issuer)),
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
        let pending = self
            .backplane
            .script(&ORPHAN)
            .key(&format!("pending:device:{device_id}"))
            .key("pending:all")
            .arg(self.backplane.key("pending:cmd:"))
            .arg(self.backplane.key("pending:issuer:"))
            .run()
            .await?;
        Ok(pending
            .as_integer()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0))
    }
}
