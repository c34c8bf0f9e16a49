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
/// Waits between attempts to listen again while the database is unreachable: every
/// authenticated request is refused meanwhile, so the first retries come fast.
const MIN_LISTEN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(2);

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
}

/// The revocations every node sharing the database records, as PostgreSQL announces them
/// (`LISTEN signet_revocations`).
#[derive(Debug, Clone)]
pub struct RevocationFeed {
    pub(super) store: PgStore,
    /// How long the feed may stay quiet before its connection is asked whether it still
    /// answers (`store.feed_heartbeat_secs`).
    pub(super) heartbeat: Duration,
    /// How long that answer may take (`store.acquire_timeout_secs`, the wait after which the
    /// store counts as unreachable everywhere else too).
    pub(super) answer_within: Duration,
}

/// What following the feed reports to the node.
#[derive(Debug)]
pub enum FeedEvent {
    /// A record just written, by this node or another one.
    Record(RevocationRecord),
    /// The feed is lost: records written elsewhere from now on may not arrive.
    Lost,
    /// Listening (again), with every record in force: nothing written before can be missing.
    InSync(RevocationSnapshot),
}

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
    /// Starts listening and reports every record in force ([`FeedEvent::InSync`]), then
    /// returns the task that reports each record written from now on, until `shutdown`.
    /// That task reports [`FeedEvent::Lost`] as soon as the listening connection closes or
    /// stops answering (a heartbeat), retries with a backoff while the database is
    /// unreachable, and reports [`FeedEvent::InSync`] again once it listens and has reloaded.
    pub async fn follow<F>(
        self,
        report: F,
        shutdown: CancellationToken,
    ) -> Result<impl std::future::Future<Output = ()> + Send, StoreError>
    where
        F: Fn(FeedEvent) + Send + Sync + 'static,
    {
        let listener = self.listen_and_reload(&report).await?;
        Ok(self.run(listener, report, shutdown))
    }

    async fn run<F>(self, listener: PgListener, report: F, shutdown: CancellationToken)
    where
        F: Fn(FeedEvent) + Send + Sync + 'static,
    {
        let mut backoff = MIN_LISTEN_BACKOFF;
        let mut listener = Some(listener);
        loop {
            let Some(active) = listener.as_mut() else {
                match self.listen_and_reload(&report).await {
                    Ok(fresh) => {
                        tracing::info!("following the revocations of other nodes again");
                        listener = Some(fresh);
                        backoff = MIN_LISTEN_BACKOFF;
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
            // `try_recv` is cancel safe: a quiet spell ends it to ask the connection.
            let woke = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = active.try_recv() => Some(received),
                _ = tokio::time::sleep(self.heartbeat) => None,
            };
            let kept = match woke {
                Some(Ok(Some(notification))) => {
                    match serde_json::from_str::<Notice>(notification.payload()) {
                        Ok(notice) => {
                            report(FeedEvent::Record(notice.into()));
                            true
                        }
                        Err(err) => {
                            // Unreadable: take everything again rather than miss a revocation.
                            tracing::warn!(error = %err, "unreadable revocation notice; reloading");
                            false
                        }
                    }
                }
                Some(Ok(None) | Err(_)) => {
                    tracing::warn!("lost the revocation feed of other nodes; listening again");
                    false
                }
                None => {
                    let asked = sqlx::query("SELECT 1").execute(&mut *active);
                    let answered = matches!(
                        tokio::time::timeout(self.answer_within, asked).await,
                        Ok(Ok(_))
                    );
                    if !answered {
                        tracing::warn!(
                            "the revocation feed of other nodes does not answer; listening again"
                        );
                    }
                    answered
                }
            };
            if !kept {
                listener = None;
                report(FeedEvent::Lost);
            }
        }
    }

    /// Listens, then loads every record in force: a record written in between arrives twice,
    /// which is harmless, rather than never.
    async fn listen_and_reload(
        &self,
        report: &impl Fn(FeedEvent),
    ) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.store.pool).await?;
        // A lost connection must surface at once, not after a reconnect attempt.
        listener.eager_reconnect(false);
        listener.listen(REVOCATION_CHANNEL).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        report(FeedEvent::InSync(self.store.load_revocations(now).await?));
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
