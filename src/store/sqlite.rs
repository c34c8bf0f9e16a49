//! The embedded SQLite store: one database file in the data directory, WAL journal, schema
//! migrations (`migrations/sqlite`) applied when it opens. The server and the CLI may use the
//! same file at once.

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "signet.db";

/// Connections in the pool: SQLite serialises writers anyway; readers share the WAL.
const MAX_CONNECTIONS: u32 = 4;
/// How long a writer waits for another (the CLI, say) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file, which readiness checks is still there (`None` in memory).
    path: Option<std::path::PathBuf>,
}

impl SqliteStore {
    /// Opens (creating if missing, mode 0600, in a 0700 directory) `data_dir/signet.db` and
    /// applies pending migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let file_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::File { path, source }
        };
        super::ensure_private_dir(data_dir).map_err(file_err(data_dir))?;
        Self::open_file(&data_dir.join(DATABASE_FILE)).await
    }

    /// Opens (creating if missing, mode 0600) the database file `path` and applies pending
    /// migrations.
    pub async fn open_file(path: &Path) -> Result<Self, StoreError> {
        let file_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::File { path, source }
        };
        let path = path.to_path_buf();
        // Created here so that the mode is ours; SQLite gives its -wal and -shm files the same.
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(file_err(&path))?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        let mut store = Self::migrated(pool).await?;
        store.path = Some(path);
        Ok(store)
    }

    /// A private in-memory database, for unit tests.
    #[cfg(test)]
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        // One connection: each in-memory connection would be its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, path: None })
    }
}

#[async_trait]
impl super::StoreHealth for SqliteStore {
    /// Reads the schema through the pool, and checks that the database file is still where it
    /// was opened: a removed or replaced file leaves open connections working on a file that is
    /// gone, which a query alone would not notice.
    async fn ping(&self) -> Result<(), StoreError> {
        if let Some(path) = &self.path {
            let meta = std::fs::metadata(path).map_err(|source| StoreError::File {
                path: path.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(StoreError::Corrupt(format!(
                    "{} is not a file",
                    path.display()
                )));
            }
        }
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }
}

super::sql::sql_store!(
    SqliteStore,
    evicted_sessions = "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL
         ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET $2"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str) -> User {
        User {
            id: id.into(),
            username: name.into(),
            roles: vec!["user".into()],
            created_at: 1,
        }
    }

    fn session(id: &str, user_id: &str, created_at: i64) -> Session {
        Session {
            id: id.into(),
            user_id: user_id.into(),
            created_at,
            expires_at: created_at + 1000,
            revoked_at: None,
        }
    }

    #[tokio::test]
    async fn usernames_are_unique() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.create_user(&user("u1", "ann"), "h").await.unwrap();
        let err = store
            .create_user(&user("u2", "ann"), "h")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::UsernameTaken), "{err}");
        assert_eq!(store.count_users().await.unwrap(), 1);
        let found = store.user_by_name("ann").await.unwrap().unwrap();
        assert_eq!(found.user, user("u1", "ann"));
        assert_eq!(found.password_hash, "h");
    }

    #[tokio::test]
    async fn a_refresh_token_is_single_use_and_reuse_revokes_the_session() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.create_user(&user("u1", "ann"), "h").await.unwrap();
        store
            .create_session(&session("s1", "u1", 10), b"t1", 10)
            .await
            .unwrap();
        let rotated = store.rotate_refresh_token(b"t1", b"t2", 11).await.unwrap();
        assert!(matches!(rotated, Rotation::Rotated(ref s) if s.id == "s1"));
        let reused = store.rotate_refresh_token(b"t1", b"t3", 12).await.unwrap();
        assert!(matches!(reused, Rotation::Reused(ref s) if s.revoked_at == Some(12)));
        // The sibling token belongs to a revoked session now.
        let sibling = store.rotate_refresh_token(b"t2", b"t4", 13).await.unwrap();
        assert_eq!(sibling, Rotation::Invalid);
        let unknown = store.rotate_refresh_token(b"zz", b"t5", 13).await.unwrap();
        assert_eq!(unknown, Rotation::Invalid);
    }

    #[tokio::test]
    async fn an_expired_session_does_not_rotate() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.create_user(&user("u1", "ann"), "h").await.unwrap();
        store
            .create_session(&session("s1", "u1", 10), b"t1", 10)
            .await
            .unwrap();
        let late = store
            .rotate_refresh_token(b"t1", b"t2", 5000)
            .await
            .unwrap();
        assert_eq!(late, Rotation::Invalid);
    }

    #[tokio::test]
    async fn the_oldest_sessions_beyond_the_cap_are_revoked() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.create_user(&user("u1", "ann"), "h").await.unwrap();
        for (i, token) in [b"a", b"b", b"c"].iter().enumerate() {
            let evicted = store
                .create_session(&session(&format!("s{i}"), "u1", 10 + i as i64), *token, 2)
                .await
                .unwrap();
            assert_eq!(evicted.is_empty(), i < 2, "{evicted:?}");
        }
        assert_eq!(
            store.rotate_refresh_token(b"a", b"x", 20).await.unwrap(),
            Rotation::Invalid
        );
    }

    #[tokio::test]
    async fn the_device_cap_holds_and_deleting_a_user_deletes_their_devices() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.create_user(&user("u1", "ann"), "h").await.unwrap();
        let device = |id: &str| Device {
            id: id.into(),
            owner_id: "u1".into(),
            name: "lamp".into(),
            created_at: 1,
            key_rotated_at: 1,
            last_token_at: None,
        };
        assert!(store.create_device(&device("d1"), b"k", 2).await.unwrap());
        assert!(store.create_device(&device("d2"), b"k", 2).await.unwrap());
        assert!(!store.create_device(&device("d3"), b"k", 2).await.unwrap());
        assert!(store.delete_user("u1").await.unwrap());
        assert!(store.list_devices(None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn revocation_records_load_until_forgotten() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.record_denied_token("j1", 100).await.unwrap();
        store.record_denied_token("j2", 10).await.unwrap();
        store.record_revoked_session("s1", 100).await.unwrap();
        let cutoff = SubjectCutoff {
            sub: "u1".into(),
            not_before: 50,
            forget_after: None,
        };
        store.record_cutoff(&cutoff).await.unwrap();
        // An earlier cut-off never weakens a later one.
        store
            .record_cutoff(&SubjectCutoff {
                not_before: 40,
                forget_after: Some(60),
                ..cutoff.clone()
            })
            .await
            .unwrap();
        let snapshot = store.load_revocations(20).await.unwrap();
        assert_eq!(snapshot.denied_tokens, vec![("j1".to_string(), 100)]);
        assert_eq!(snapshot.revoked_sessions, vec![("s1".to_string(), 100)]);
        assert_eq!(snapshot.cutoffs, vec![cutoff]);
    }
}
