//! The PostgreSQL store: one database several nodes share, through a bounded pool. Schema
//! migrations (`migrations/postgres`) run when it opens; sqlx takes an advisory lock, so nodes
//! starting together apply them once. Waiting for a connection is bounded
//! (`store.acquire_timeout_secs`) and so is every statement (`store.statement_timeout_secs`):
//! an unreachable database makes requests fail in seconds, never hang.

use crate::settings::StoreSettings;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

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
