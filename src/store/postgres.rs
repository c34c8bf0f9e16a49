//! The PostgreSQL store: one database several nodes share, through a bounded pool. Schema
//! migrations (`migrations/postgres`) run when it opens; sqlx takes an advisory lock, so nodes
//! starting together apply them once. Waiting for a connection is bounded
//! (`store.acquire_timeout_secs`) and so is every statement (`store.statement_timeout_secs`):
//! an unreachable database makes requests fail in seconds, never hang.

use super::RevocationRecord;
use crate::settings::StoreSettings;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The channel `migrations/postgres/0002_revocation_notify.sql` announces revocation records on.
const REVOCATION_CHANNEL: &str = "signet_revocations";
/// Longest wait between attempts to listen again while the database is unreachable.
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (with `password` when given: `store.password_file`) and applies
    /// pending migrations.
    pub async fn open(
        url: &str,
        password: Option<&str>,
        settings: &StoreSettings,
    ) -> Result<Self, StoreError> {
        let store = Self::connect(url, password, settings).await?;
        MIGRATOR.run(&store.pool).await?;
        Ok(store)
    }

    /// Connects without migrating (`signet migrate` migrates through [`PgStore::migrate`]).
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        settings: &StoreSettings,
    ) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?.application_name("signet");
        if let Some(password) = password {
            options = options.password(password);
        }
        let statement_timeout = format!("{}s", settings.statement_timeout_secs);
        options = options.options([("statement_timeout", statement_timeout.as_str())]);
        let acquire = Duration::from_secs(settings.acquire_timeout_secs);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(0)
            .acquire_timeout(acquire)
            // A connection idle this long may have been cut by a firewall: ask before use.
            .test_before_acquire(true)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The pool, for the revocation listener and `store copy`.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The revocations every node sharing the database records, as PostgreSQL announces them
/// (`LISTEN signet_revocations`).
#[derive(Debug, Clone)]
pub struct RevocationFeed(pub(super) PgStore);

/// A notification's payload: the table written and the row as written.
#[derive(serde::Deserialize)]
#[serde(tag = "table", content = "row", rename_all = "snake_case")]
enum Notice {
    DeniedTokens {
        jti: String,
        expires_at: i64,
    },
    RevokedSessions {
        sid: String,
        forget_after: i64,
    },
    SubjectCutoffs {
        sub: String,
        not_before: i64,
        forget_after: Option<i64>,
    },
}

impl From<Notice> for RevocationRecord {
    fn from(notice: Notice) -> Self {
        match notice {
            Notice::DeniedTokens { jti, expires_at } => Self::DeniedToken { jti, expires_at },
            Notice::RevokedSessions { sid, forget_after } => {
                Self::RevokedSession { sid, forget_after }
            }
            Notice::SubjectCutoffs {
                sub,
                not_before,
                forget_after,
            } => Self::Cutoff(super::SubjectCutoff {
                sub,
                not_before,
                forget_after,
            }),
        }
    }
}

impl RevocationFeed {
    /// Hands every revocation record written from now on to `apply`, until `shutdown`. Each
    /// time it (re)starts listening, which is also when notifications may have been missed, it
    /// first hands over every record in force. While the database is unreachable it retries
    /// with a backoff; the records held in memory keep refusing what they refused.
    pub async fn follow<F>(self, apply: F, shutdown: CancellationToken)
    where
        F: Fn(RevocationRecord) + Send + 'static,
    {
        let store = self.0;
        let mut backoff = Duration::from_millis(100);
        let mut listener: Option<PgListener> = None;
        loop {
            let Some(active) = listener.as_mut() else {
                match store.listen_and_reload(&apply).await {
                    Ok(fresh) => {
                        listener = Some(fresh);
                        backoff = Duration::from_millis(100);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot follow the revocations of other nodes; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
                    }
                }
                continue;
            };
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = active.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    match serde_json::from_str::<Notice>(notification.payload()) {
                        Ok(notice) => apply(notice.into()),
                        Err(err) => {
                            // Unreadable: take everything again rather than miss a revocation.
                            tracing::warn!(error = %err, "unreadable revocation notice; reloading");
                            listener = None;
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the revocation feed of other nodes; listening again");
                    listener = None;
                }
            }
        }
    }
}

impl PgStore {
    async fn listen_and_reload(
        &self,
        apply: &impl Fn(RevocationRecord),
    ) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(REVOCATION_CHANNEL).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let snapshot = self.load_revocations(now).await?;
        for record in snapshot.into_records() {
            apply(record);
        }
        Ok(listener)
    }
}

#[async_trait]
impl super::StoreHealth for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

super::sql::sql_store!(
    PgStore,
    evicted_sessions = "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL
         ORDER BY created_at DESC, seq DESC OFFSET $2"
);
