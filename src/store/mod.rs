//! Persistence for identity: users, devices, refresh-token sessions, revocation records and
//! the publish API's keys.
//!
//! The services above talk to the traits here, never to SQL. Two backends implement them:
//! [`SqliteStore`] (embedded, the default) and [`PgStore`] (`[store] url`, shared by several
//! nodes), with one copy of the SQL (`sql.rs`) and of the row mapping (`rows.rs`). Every operation that must be atomic (refresh
//! rotation with reuse detection, the per-user device and session caps) is one trait method, so
//! each backend makes it atomic in its own way. Times are Unix seconds; secrets arrive already
//! hashed and never leave as anything else.

pub mod copy;
mod data_dir;
mod postgres;
mod rows;
mod sql;
mod sqlite;

pub use data_dir::ensure_private_dir;
pub use postgres::PgStore;
pub use sqlite::{SqliteStore, DATABASE_FILE};

use crate::settings::Settings;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the username is already taken")]
    UsernameTaken,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// Whether the database could not be reached (or did not answer in time), as opposed to
    /// refusing the request: the API answers these 503 `store_unavailable`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => true,
                // 57014 query_canceled (statement_timeout); class 08: connection exceptions;
                // 57P01-03: the server is shutting down or starting.
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code == "57014" || code.starts_with("08") || code.starts_with("57P")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// An opened store: what the services use, and, when other nodes may share it, the feed of
/// the revocations they record.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    pub revocation_feed: Option<RevocationFeed>,
}

/// Opens the store `settings` name: `[store] url` (PostgreSQL) or, unset, the SQLite file in
/// the data directory. Pending migrations are applied.
pub async fn open(settings: &Settings) -> Result<OpenedStore, StoreError> {
    Ok(match &settings.store.url {
        Some(url) => {
            let password = settings
                .store
                .password()
                .map_err(|e| StoreError::Config(e.to_string()))?;
            let pg = PgStore::open(url.expose(), password.as_deref(), &settings.store).await?;
            OpenedStore {
                revocation_feed: Some(RevocationFeed {
                    store: pg.clone(),
                    heartbeat: Duration::from_secs(settings.store.feed_heartbeat_secs),
                    answer_within: Duration::from_secs(settings.store.acquire_timeout_secs),
                }),
                store: Arc::new(pg),
            }
        }
        None => OpenedStore {
            store: Arc::new(SqliteStore::open(&settings.server.data_dir).await?),
            revocation_feed: None,
        },
    })
}

/// Opens a store named by URL for `signet store copy`: `postgres://...` or `sqlite://PATH` (a
/// `signet.db` file, which must exist); `None`: the configured store. Migrations are applied.
pub async fn open_for_copy(
    url: Option<&str>,
    settings: &Settings,
) -> Result<Box<dyn copy::TableCopy>, StoreError> {
    let Some(url) = url else {
        return Ok(match &settings.store.url {
            Some(url) => {
                let password = settings
                    .store
                    .password()
                    .map_err(|e| StoreError::Config(e.to_string()))?;
                Box::new(PgStore::open(url.expose(), password.as_deref(), &settings.store).await?)
            }
            None => Box::new(SqliteStore::open(&settings.server.data_dir).await?),
        });
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = std::path::Path::new(path);
        if !path.is_file() {
            return Err(StoreError::Config(format!(
                "{} is not a SQLite database file",
                path.display()
            )));
        }
        return Ok(Box::new(SqliteStore::open_file(path).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(PgStore::open(url, None, &settings.store).await?));
    }
    Err(StoreError::Config(
        "a store URL is postgres://... or sqlite://PATH".into(),
    ))
}

/// A revocation record as written, by this node or another one sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationRecord {
    DeniedToken { jti: String, expires_at: i64 },
    RevokedSession { sid: String, forget_after: i64 },
    Cutoff(SubjectCutoff),
}

impl RevocationSnapshot {
    pub fn into_records(self) -> impl Iterator<Item = RevocationRecord> {
        let denied = self
            .denied_tokens
            .into_iter()
            .map(|(jti, expires_at)| RevocationRecord::DeniedToken { jti, expires_at });
        let sessions = self
            .revoked_sessions
            .into_iter()
            .map(|(sid, forget_after)| RevocationRecord::RevokedSession { sid, forget_after });
        denied
            .chain(sessions)
            .chain(self.cutoffs.into_iter().map(RevocationRecord::Cutoff))
    }
}

pub use postgres::{FeedEvent, RevocationFeed};

/// A user as listed: everything but the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Random, stable identifier; the `sub` of the user's access tokens.
    pub id: String,
    pub username: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

/// A user with the password hash, for verification.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    /// Argon2id PHC string.
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub created_at: i64,
    pub key_rotated_at: i64,
    pub last_token_at: Option<i64>,
}

/// A device with the hash of its key, for verification.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    pub device: Device,
    pub key_hash: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now used and `next` replaces it.
    Rotated(Session),
    /// The token had been used already: its whole session is now revoked.
    Reused(Session),
    /// Unknown token, or its session is expired or revoked.
    Invalid,
}

/// Revocation records that are still in force, loaded at start-up.
#[derive(Debug, Clone, Default)]
pub struct RevocationSnapshot {
    /// `(jti, expires_at)`.
    pub denied_tokens: Vec<(String, i64)>,
    /// `(sid, forget_after)`.
    pub revoked_sessions: Vec<(String, i64)>,
    pub cutoffs: Vec<SubjectCutoff>,
}

/// Tokens of `sub` (or owned by `sub`) issued before `not_before` are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectCutoff {
    pub sub: String,
    pub not_before: i64,
    /// When every token the cut-off can refuse has expired; `None` keeps it for good.
    pub forget_after: Option<i64>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with [`StoreError::UsernameTaken`] when the name exists.
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError>;
    async fn user_by_name(&self, username: &str) -> Result<Option<UserCredentials>, StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    async fn count_users(&self) -> Result<u64, StoreError>;
    /// False when no such user.
    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<bool, StoreError>;
    /// Deletes the user with their devices and sessions. False when no such user.
    async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Creates the device unless its owner already has `max_per_owner`; `false` then.
    async fn create_device(
        &self,
        device: &Device,
        key_hash: &[u8],
        max_per_owner: u32,
    ) -> Result<bool, StoreError>;
    async fn device(&self, id: &str) -> Result<Option<DeviceCredentials>, StoreError>;
    /// One owner's devices, or every device with `None`.
    async fn list_devices(&self, owner_id: Option<&str>) -> Result<Vec<Device>, StoreError>;
    async fn delete_device(&self, id: &str) -> Result<bool, StoreError>;
    async fn set_device_key(&self, id: &str, key_hash: &[u8], now: i64)
        -> Result<bool, StoreError>;
    async fn record_device_token(&self, id: &str, now: i64) -> Result<(), StoreError>;
    /// Replaces the key of every device `owner_id` owns with random bytes no key hashes to;
    /// returns how many.
    async fn disable_owner_device_keys(&self, owner_id: &str, now: i64) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Opens a session with its first refresh token. When the user then has more than
    /// `max_per_user` live sessions, the oldest are revoked; their ids are returned.
    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &[u8],
        max_per_user: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// Atomically uses `presented` and stores `next` in its place, or detects reuse.
    async fn rotate_refresh_token(
        &self,
        presented: &[u8],
        next: &[u8],
        now: i64,
    ) -> Result<Rotation, StoreError>;
    /// The session a refresh token (used or not) belongs to.
    async fn session_of_refresh_token(&self, hash: &[u8]) -> Result<Option<Session>, StoreError>;
    /// False when the session does not exist or was already revoked.
    async fn revoke_session(&self, sid: &str, reason: &str, now: i64) -> Result<bool, StoreError>;
    /// Revokes every live session of the user; returns their ids.
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;
}

/// A key of the publish API as listed: everything but the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Random, 16 hex digits: the key names it, lists and audit events show it.
    pub id: String,
    pub name: String,
    /// `hub:<hub|*>:<action|*>`, validated by the service.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// An API key with the hash of its secret, for verification.
#[derive(Debug, Clone)]
pub struct ApiKeyCredentials {
    pub key: ApiKey,
    pub secret_hash: Vec<u8>,
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn create_api_key(&self, key: &ApiKey, secret_hash: &[u8]) -> Result<(), StoreError>;
    /// The key with this id, revoked or not.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyCredentials>, StoreError>;
    /// Every key, revoked ones too, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// False when no such key or already revoked.
    async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError>;
}

/// Where the revocation service keeps its records so that a restart does not resurrect a
/// revoked token.
#[async_trait]
pub trait RevocationLog: Send + Sync {
    /// Everything still in force at `now`; forgets (deletes) the rest, and prunes sessions
    /// that have expired.
    async fn load_revocations(&self, now: i64) -> Result<RevocationSnapshot, StoreError>;
    async fn record_denied_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError>;
    async fn record_revoked_session(&self, sid: &str, forget_after: i64) -> Result<(), StoreError>;
    /// Sets the cut-off; an existing later one is kept.
    async fn record_cutoff(&self, cutoff: &SubjectCutoff) -> Result<(), StoreError>;
}

/// Every store the identity service needs, as one object.
/// Whether the store answers, for readiness.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    /// A cheap query that reaches the database; `Err` says why it does not answer.
    async fn ping(&self) -> Result<(), StoreError>;
}

pub trait Store:
    UserStore + DeviceStore + SessionStore + RevocationLog + ApiKeyStore + StoreHealth + std::fmt::Debug
{
}

impl<T> Store for T where
    T: UserStore
        + DeviceStore
        + SessionStore
        + RevocationLog
        + ApiKeyStore
        + StoreHealth
        + std::fmt::Debug
{
}
