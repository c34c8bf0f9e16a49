//! [`MeteredStore`]: any [`Store`] with the latency and errors of each operation measured.

use super::Metrics;
use crate::store::*;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Instant;

/// Wraps a store, whichever backend; every trait method is timed under its own name.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Metrics,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }
}

/// Times `$call` as operation `$op`.
macro_rules! metered {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self
            .metrics
            .store_query($op, started.elapsed(), result.is_ok());
        result
    }};
}

#[async_trait]
impl UserStore for MeteredStore {
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.create_user(user, password_hash).await;
        // A taken username is an answer, not a store failure.
        let ok = matches!(result, Ok(()) | Err(StoreError::UsernameTaken));
        self.metrics
            .store_query("create_user", started.elapsed(), ok);
        result
    }
    async fn user_by_name(&self, username: &str) -> Result<Option<UserCredentials>, StoreError> {
        metered!(self, "user_by_name", self.inner.user_by_name(username))
    }
    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        metered!(self, "user_by_id", self.inner.user_by_id(id))
    }
    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        metered!(self, "list_users", self.inner.list_users())
    }
    async fn count_users(&self) -> Result<u64, StoreError> {
        metered!(self, "count_users", self.inner.count_users())
    }
    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<bool, StoreError> {
        metered!(
            self,
            "set_password",
            self.inner.set_password(user_id, password_hash)
        )
    }
    async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        metered!(self, "delete_user", self.inner.delete_user(user_id))
    }
}

#[async_trait]
impl DeviceStore for MeteredStore {
    async fn create_device(
        &self,
        device: &Device,
        key_hash: &[u8],
        max_per_owner: u32,
    ) -> Result<bool, StoreError> {
        metered!(
            self,
            "create_device",
            self.inner.create_device(device, key_hash, max_per_owner)
        )
    }
    async fn device(&self, id: &str) -> Result<Option<DeviceCredentials>, StoreError> {
        metered!(self, "device", self.inner.device(id))
    }
    async fn list_devices(&self, owner_id: Option<&str>) -> Result<Vec<Device>, StoreError> {
        metered!(self, "list_devices", self.inner.list_devices(owner_id))
    }
    async fn delete_device(&self, id: &str) -> Result<bool, StoreError> {
        metered!(self, "delete_device", self.inner.delete_device(id))
    }
    async fn set_device_key(
        &self,
        id: &str,
        key_hash: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        metered!(
            self,
            "set_device_key",
            self.inner.set_device_key(id, key_hash, now)
        )
    }
    async fn record_device_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        metered!(
            self,
            "record_device_token",
            self.inner.record_device_token(id, now)
        )
    }
    async fn disable_owner_device_keys(&self, owner_id: &str, now: i64) -> Result<u64, StoreError> {
        metered!(
            self,
            "disable_owner_device_keys",
            self.inner.disable_owner_device_keys(owner_id, now)
        )
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &[u8],
        max_per_user: u32,
    ) -> Result<Vec<String>, StoreError> {
        metered!(
            self,
            "create_session",
            self.inner
                .create_session(session, refresh_hash, max_per_user)
        )
    }
    async fn rotate_refresh_token(
        &self,
        presented: &[u8],
        next: &[u8],
        now: i64,
    ) -> Result<Rotation, StoreError> {
        metered!(
            self,
            "rotate_refresh_token",
            self.inner.rotate_refresh_token(presented, next, now)
        )
    }
    async fn session_of_refresh_token(&self, hash: &[u8]) -> Result<Option<Session>, StoreError> {
        metered!(
            self,
            "session_of_refresh_token",
            self.inner.session_of_refresh_token(hash)
        )
    }
    async fn revoke_session(&self, sid: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        metered!(
            self,
            "revoke_session",
            self.inner.revoke_session(sid, reason, now)
        )
    }
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        metered!(
            self,
            "revoke_user_sessions",
            self.inner.revoke_user_sessions(user_id, reason, now)
        )
    }
}

#[async_trait]
impl RevocationLog for MeteredStore {
    async fn load_revocations(&self, now: i64) -> Result<RevocationSnapshot, StoreError> {
        metered!(self, "load_revocations", self.inner.load_revocations(now))
    }
    async fn record_denied_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        metered!(
            self,
            "record_denied_token",
            self.inner.record_denied_token(jti, expires_at)
        )
    }
    async fn record_revoked_session(&self, sid: &str, forget_after: i64) -> Result<(), StoreError> {
        metered!(
            self,
            "record_revoked_session",
            self.inner.record_revoked_session(sid, forget_after)
        )
    }
    async fn record_cutoff(&self, cutoff: &SubjectCutoff) -> Result<(), StoreError> {
        metered!(self, "record_cutoff", self.inner.record_cutoff(cutoff))
    }
}

#[async_trait]
impl ApiKeyStore for MeteredStore {
    async fn create_api_key(&self, key: &ApiKey, secret_hash: &[u8]) -> Result<(), StoreError> {
        metered!(
            self,
            "create_api_key",
            self.inner.create_api_key(key, secret_hash)
        )
    }
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyCredentials>, StoreError> {
        metered!(self, "api_key", self.inner.api_key(id))
    }
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        metered!(self, "list_api_keys", self.inner.list_api_keys())
    }
    async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        metered!(self, "revoke_api_key", self.inner.revoke_api_key(id, now))
    }
}

#[async_trait]
impl StoreHealth for MeteredStore {
    async fn ping(&self) -> Result<(), StoreError> {
        metered!(self, "ping", self.inner.ping())
    }
}
