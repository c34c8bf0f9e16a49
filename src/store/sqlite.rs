//! The embedded SQLite store: one database file in the data directory, WAL journal, schema
//! migrations (`migrations/sqlite`) applied when it opens. The server and the CLI may use the
//! same file at once.

use super::{
    Device, DeviceCredentials, DeviceStore, RevocationLog, RevocationSnapshot, Rotation, Session,
    SessionStore, StoreError, SubjectCutoff, User, UserCredentials, UserStore,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
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
        let path = data_dir.join(DATABASE_FILE);
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
        Self::migrated(pool).await
    }

    /// A private in-memory database, for unit tests.
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
        Ok(Self { pool })
    }
}

fn user_from_row(row: &SqliteRow) -> Result<User, StoreError> {
    let roles: String = row.try_get("roles")?;
    let roles = serde_json::from_str(&roles)
        .map_err(|e| StoreError::Corrupt(format!("roles of a user: {e}")))?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        roles,
        created_at: row.try_get("created_at")?,
    })
}

fn device_from_row(row: &SqliteRow) -> Result<Device, StoreError> {
    Ok(Device {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        key_rotated_at: row.try_get("key_rotated_at")?,
        last_token_at: row.try_get("last_token_at")?,
    })
}

fn session_from_row(row: &SqliteRow) -> Result<Session, StoreError> {
    Ok(Session {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const USER_COLUMNS: &str = "id, username, roles, created_at";
const DEVICE_COLUMNS: &str = "id, owner_id, name, created_at, key_rotated_at, last_token_at";

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&user.roles)
            .map_err(|e| StoreError::Corrupt(format!("roles: {e}")))?;
        let result = sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(password_hash)
        .bind(roles)
        .bind(user.created_at)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::UsernameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserCredentials>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = ?"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(UserCredentials {
                user: user_from_row(&row)?,
                password_hash: row.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
    }

    async fn set_password(&self, user_id: &str, password_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn create_device(
        &self,
        device: &Device,
        key_hash: &[u8],
        max_per_owner: u32,
    ) -> Result<bool, StoreError> {
        // One statement, so the cap holds under concurrent requests.
        let done = sqlx::query(
            "INSERT INTO devices (id, owner_id, name, key_hash, created_at, key_rotated_at)
             SELECT ?, ?, ?, ?, ?, ?
             WHERE (SELECT COUNT(*) FROM devices WHERE owner_id = ?) < ?",
        )
        .bind(&device.id)
        .bind(&device.owner_id)
        .bind(&device.name)
        .bind(key_hash)
        .bind(device.created_at)
        .bind(device.key_rotated_at)
        .bind(&device.owner_id)
        .bind(i64::from(max_per_owner))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceCredentials>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS}, key_hash FROM devices WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DeviceCredentials {
                device: device_from_row(&row)?,
                key_hash: row.try_get("key_hash")?,
            })
        })
        .transpose()
    }

    async fn list_devices(&self, owner_id: Option<&str>) -> Result<Vec<Device>, StoreError> {
        let rows = match owner_id {
            Some(owner) => {
                sqlx::query(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE owner_id = ? ORDER BY created_at, id"
            ))
                .bind(owner)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY owner_id, created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(device_from_row).collect()
    }

    async fn delete_device(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM devices WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_device_key(
        &self,
        id: &str,
        key_hash: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE devices SET key_hash = ?, key_rotated_at = ? WHERE id = ?")
            .bind(key_hash)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_device_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET last_token_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn disable_owner_device_keys(&self, owner_id: &str, now: i64) -> Result<u64, StoreError> {
        // A stored key is the SHA-256 of a presented key: 32 random bytes match none.
        let done = sqlx::query(
            "UPDATE devices SET key_hash = randomblob(32), key_rotated_at = ? WHERE owner_id = ?",
        )
        .bind(now)
        .bind(owner_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

const SESSION_OF_TOKEN: &str = "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.revoked_at
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.token_hash = ?";

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        session: &Session,
        refresh_hash: &[u8],
        max_per_user: u32,
    ) -> Result<Vec<String>, StoreError> {
        let now = session.created_at;
        let mut tx = self.pool.begin().await?;
        // Writing first takes the write lock at once, so the reads below cannot go stale.
        sqlx::query("DELETE FROM sessions WHERE user_id = ? AND expires_at <= ?")
            .bind(&session.user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES (?, ?, ?)",
        )
        .bind(refresh_hash)
        .bind(&session.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let evicted: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE user_id = ? AND revoked_at IS NULL
             ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?",
        )
        .bind(&session.user_id)
        .bind(i64::from(max_per_user))
        .fetch_all(&mut *tx)
        .await?;
        for sid in &evicted {
            sqlx::query(
                "UPDATE sessions SET revoked_at = ?, revoked_reason = 'session_limit' WHERE id = ?",
            )
            .bind(now)
            .bind(sid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(evicted)
    }

    async fn rotate_refresh_token(
        &self,
        presented: &[u8],
        next: &[u8],
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The conditional update is the single-use guarantee: of two concurrent presentations
        // of one token, exactly one sees a row change.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
        )
        .bind(now)
        .bind(presented)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let Some(row) = sqlx::query(SESSION_OF_TOKEN)
            .bind(presented)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Rotation::Invalid);
        };
        let session = session_from_row(&row)?;
        let live = session.revoked_at.is_none() && session.expires_at > now;
        let outcome = match (claimed, live) {
            (true, true) => {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES (?, ?, ?)",
                )
                .bind(next)
                .bind(&session.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Rotation::Rotated(session)
            }
            (false, true) => {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = ?, revoked_reason = 'refresh_token_reused'
                     WHERE id = ?",
                )
                .bind(now)
                .bind(&session.id)
                .execute(&mut *tx)
                .await?;
                Rotation::Reused(Session {
                    revoked_at: Some(now),
                    ..session
                })
            }
            (_, false) => Rotation::Invalid,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn session_of_refresh_token(&self, hash: &[u8]) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(SESSION_OF_TOKEN)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn revoke_session(&self, sid: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoked_reason = ?
             WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(sid)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = ?, revoked_reason = ?
             WHERE user_id = ? AND revoked_at IS NULL RETURNING id",
        )
        .bind(now)
        .bind(reason)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}

#[async_trait]
impl RevocationLog for SqliteStore {
    async fn load_revocations(&self, now: i64) -> Result<RevocationSnapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM denied_tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM revoked_sessions WHERE forget_after <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM subject_cutoffs WHERE forget_after <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let denied_tokens = sqlx::query_as("SELECT jti, expires_at FROM denied_tokens")
            .fetch_all(&mut *tx)
            .await?;
        let revoked_sessions = sqlx::query_as("SELECT sid, forget_after FROM revoked_sessions")
            .fetch_all(&mut *tx)
            .await?;
        let cutoffs = sqlx::query("SELECT sub, not_before, forget_after FROM subject_cutoffs")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| {
                Ok(SubjectCutoff {
                    sub: row.try_get("sub")?,
                    not_before: row.try_get("not_before")?,
                    forget_after: row.try_get("forget_after")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(RevocationSnapshot {
            denied_tokens,
            revoked_sessions,
            cutoffs,
        })
    }

    async fn record_denied_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO denied_tokens (jti, expires_at) VALUES (?, ?)
             ON CONFLICT (jti) DO UPDATE SET expires_at = MAX(expires_at, excluded.expires_at)",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_revoked_session(&self, sid: &str, forget_after: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_sessions (sid, forget_after) VALUES (?, ?)
             ON CONFLICT (sid) DO UPDATE SET forget_after = MAX(forget_after, excluded.forget_after)",
        )
        .bind(sid)
        .bind(forget_after)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_cutoff(&self, cutoff: &SubjectCutoff) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO subject_cutoffs (sub, not_before, forget_after) VALUES (?, ?, ?)
             ON CONFLICT (sub) DO UPDATE SET
                 not_before = MAX(not_before, excluded.not_before),
                 forget_after = CASE
                     WHEN forget_after IS NULL OR excluded.forget_after IS NULL THEN NULL
                     ELSE MAX(forget_after, excluded.forget_after) END",
        )
        .bind(&cutoff.sub)
        .bind(cutoff.not_before)
        .bind(cutoff.forget_after)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

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
