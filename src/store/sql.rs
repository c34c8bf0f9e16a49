//! The store traits in SQL both backends run as written: `$N` parameters (SQLite binds them by
//! number too), `RETURNING`, `ON CONFLICT`, `CASE` instead of `MAX`/`GREATEST`. Each backend
//! brings its pool (a `pool` field) and the one query that differs, and [`sql_store!`] writes
//! the trait implementations for it, so there is one copy of every query.
//!
//! Concurrency is the database's. Per-user caps (devices, sessions) first lock the user's row
//! with a no-op `UPDATE` (SQLite: the write lock; PostgreSQL: that row), so concurrent requests
//! for one user, from any node, queue there. Refresh rotation claims the presented token with
//! a conditional `UPDATE`: of two concurrent presentations exactly one changes the row, the
//! other (on PostgreSQL after waiting for the first to commit) sees it used: reuse.

pub(super) const LOCK_USER: &str = "UPDATE users SET id = id WHERE id = $1";

pub(super) const SESSION_OF_TOKEN: &str =
    "SELECT s.id, s.user_id, s.created_at, s.expires_at, s.revoked_at
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.token_hash = $1";

/// 32 random bytes: a stored device key no presented key hashes to.
pub(super) fn unusable_key_hash() -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Implements [`UserStore`](super::UserStore), [`DeviceStore`](super::DeviceStore),
/// [`SessionStore`](super::SessionStore) and [`RevocationLog`](super::RevocationLog) for
/// `$store`, whose `pool` field is a sqlx pool. `evicted_sessions` selects the ids of user `$1`'s
/// live sessions beyond the newest `$2`, newest first, ties broken by insertion order.
macro_rules! sql_store {
    ($store:ty, evicted_sessions = $evicted:expr) => {
        use $crate::store::rows::{
            roles_json, ApiKeyCredentialsRow, ApiKeyRow, CutoffRow, DeviceCredentialsRow,
            DeviceRow, SessionRow, UserCredentialsRow, UserRow, API_KEY_COLUMNS, DEVICE_COLUMNS,
            USER_COLUMNS,
        };
        use $crate::store::sql::{unusable_key_hash, LOCK_USER, SESSION_OF_TOKEN};
        use $crate::store::{
            ApiKey, ApiKeyCredentials, ApiKeyStore, Device, DeviceCredentials, DeviceStore, RevocationLog, RevocationSnapshot, Rotation,
            Session, SessionStore, StoreError, SubjectCutoff, User, UserCredentials, UserStore,
        };

        #[async_trait::async_trait]
        impl UserStore for $store {
            async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
                let result = sqlx::query(
                    "INSERT INTO users (id, username, password_hash, roles, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&user.id)
                .bind(&user.username)
                .bind(password_hash)
                .bind(roles_json(&user.roles)?)
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

            async fn user_by_name(
                &self,
                username: &str,
            ) -> Result<Option<UserCredentials>, StoreError> {
                sqlx::query_as::<_, UserCredentialsRow>(&format!(
                    "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1"
                ))
                .bind(username)
                .fetch_optional(&self.pool)
                .await?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
                sqlx::query_as::<_, UserRow>(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn list_users(&self) -> Result<Vec<User>, StoreError> {
                sqlx::query_as::<_, UserRow>(&format!(
                    "SELECT {USER_COLUMNS} FROM users ORDER BY username"
                ))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
            }

            async fn count_users(&self) -> Result<u64, StoreError> {
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(count.max(0) as u64)
            }

            async fn set_password(
                &self,
                user_id: &str,
                password_hash: &str,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl DeviceStore for $store {
            async fn create_device(
                &self,
                device: &Device,
                key_hash: &[u8],
                max_per_owner: u32,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(LOCK_USER)
                    .bind(&device.owner_id)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query(
                    "INSERT INTO devices (id, owner_id, name, key_hash, created_at, key_rotated_at)
                     SELECT $1, $2, $3, $4, $5, $6
                     WHERE (SELECT COUNT(*) FROM devices WHERE owner_id = $2) < $7",
                )
                .bind(&device.id)
                .bind(&device.owner_id)
                .bind(&device.name)
                .bind(key_hash)
                .bind(device.created_at)
                .bind(device.key_rotated_at)
                .bind(i64::from(max_per_owner))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn device(&self, id: &str) -> Result<Option<DeviceCredentials>, StoreError> {
                let row = sqlx::query_as::<_, DeviceCredentialsRow>(&format!(
                    "SELECT {DEVICE_COLUMNS}, key_hash FROM devices WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_devices(
                &self,
                owner_id: Option<&str>,
            ) -> Result<Vec<Device>, StoreError> {
                let rows = match owner_id {
                    Some(owner) => {
                        sqlx::query_as::<_, DeviceRow>(&format!(
                            "SELECT {DEVICE_COLUMNS} FROM devices WHERE owner_id = $1
                             ORDER BY created_at, id"
                        ))
                        .bind(owner)
                        .fetch_all(&self.pool)
                        .await?
                    }
                    None => {
                        sqlx::query_as::<_, DeviceRow>(&format!(
                            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY owner_id, created_at, id"
                        ))
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn delete_device(&self, id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM devices WHERE id = $1")
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
                let done = sqlx::query(
                    "UPDATE devices SET key_hash = $1, key_rotated_at = $2 WHERE id = $3",
                )
                .bind(key_hash)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn record_device_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE devices SET last_token_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn disable_owner_device_keys(
                &self,
                owner_id: &str,
                now: i64,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(
                    "UPDATE devices SET key_hash = $1, key_rotated_at = $2 WHERE owner_id = $3",
                )
                .bind(unusable_key_hash())
                .bind(now)
                .bind(owner_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl SessionStore for $store {
            async fn create_session(
                &self,
                session: &Session,
                refresh_hash: &[u8],
                max_per_user: u32,
            ) -> Result<Vec<String>, StoreError> {
                let now = session.created_at;
                let mut tx = self.pool.begin().await?;
                sqlx::query(LOCK_USER)
                    .bind(&session.user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at <= $2")
                    .bind(&session.user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&session.id)
                .bind(&session.user_id)
                .bind(session.created_at)
                .bind(session.expires_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, issued_at)
                     VALUES ($1, $2, $3)",
                )
                .bind(refresh_hash)
                .bind(&session.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let evicted: Vec<String> = sqlx::query_scalar($evicted)
                    .bind(&session.user_id)
                    .bind(i64::from(max_per_user))
                    .fetch_all(&mut *tx)
                    .await?;
                for sid in &evicted {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'session_limit'
                         WHERE id = $2",
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
                let claimed = sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $1
                     WHERE token_hash = $2 AND used_at IS NULL",
                )
                .bind(now)
                .bind(presented)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let Some(session) = sqlx::query_as::<_, SessionRow>(SESSION_OF_TOKEN)
                    .bind(presented)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(Session::from)
                else {
                    return Ok(Rotation::Invalid);
                };
                let live = session.revoked_at.is_none() && session.expires_at > now;
                let outcome = match (claimed, live) {
                    (true, true) => {
                        sqlx::query(
                            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at)
                             VALUES ($1, $2, $3)",
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
                            "UPDATE sessions
                             SET revoked_at = $1, revoked_reason = 'refresh_token_reused'
                             WHERE id = $2",
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

            async fn session_of_refresh_token(
                &self,
                hash: &[u8],
            ) -> Result<Option<Session>, StoreError> {
                let row = sqlx::query_as::<_, SessionRow>(SESSION_OF_TOKEN)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn revoke_session(
                &self,
                sid: &str,
                reason: &str,
                now: i64,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2
                     WHERE id = $3 AND revoked_at IS NULL",
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
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = $2
                     WHERE user_id = $3 AND revoked_at IS NULL RETURNING id",
                )
                .bind(now)
                .bind(reason)
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(ids)
            }
        }

        #[async_trait::async_trait]
        impl RevocationLog for $store {
            async fn load_revocations(&self, now: i64) -> Result<RevocationSnapshot, StoreError> {
                let mut tx = self.pool.begin().await?;
                for forget in [
                    "DELETE FROM denied_tokens WHERE expires_at <= $1",
                    "DELETE FROM revoked_sessions WHERE forget_after <= $1",
                    "DELETE FROM subject_cutoffs WHERE forget_after <= $1",
                    "DELETE FROM sessions WHERE expires_at <= $1",
                ] {
                    sqlx::query(forget).bind(now).execute(&mut *tx).await?;
                }
                let denied_tokens = sqlx::query_as("SELECT jti, expires_at FROM denied_tokens")
                    .fetch_all(&mut *tx)
                    .await?;
                let revoked_sessions =
                    sqlx::query_as("SELECT sid, forget_after FROM revoked_sessions")
                        .fetch_all(&mut *tx)
                        .await?;
                let cutoffs = sqlx::query_as::<_, CutoffRow>(
                    "SELECT sub, not_before, forget_after FROM subject_cutoffs",
                )
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(Into::into)
                .collect();
                tx.commit().await?;
                Ok(RevocationSnapshot {
                    denied_tokens,
                    revoked_sessions,
                    cutoffs,
                })
            }

            async fn record_denied_token(
                &self,
                jti: &str,
                expires_at: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO denied_tokens (jti, expires_at) VALUES ($1, $2)
                     ON CONFLICT (jti) DO UPDATE SET expires_at = CASE
                         WHEN excluded.expires_at > denied_tokens.expires_at
                         THEN excluded.expires_at ELSE denied_tokens.expires_at END",
                )
                .bind(jti)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_revoked_session(
                &self,
                sid: &str,
                forget_after: i64,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO revoked_sessions (sid, forget_after) VALUES ($1, $2)
                     ON CONFLICT (sid) DO UPDATE SET forget_after = CASE
                         WHEN excluded.forget_after > revoked_sessions.forget_after
                         THEN excluded.forget_after ELSE revoked_sessions.forget_after END",
                )
                .bind(sid)
                .bind(forget_after)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn record_cutoff(&self, cutoff: &SubjectCutoff) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO subject_cutoffs (sub, not_before, forget_after)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (sub) DO UPDATE SET
                         not_before = CASE
                             WHEN excluded.not_before > subject_cutoffs.not_before
                             THEN excluded.not_before ELSE subject_cutoffs.not_before END,
                         forget_after = CASE
                             WHEN subject_cutoffs.forget_after IS NULL
                                 OR excluded.forget_after IS NULL THEN NULL
                             WHEN excluded.forget_after > subject_cutoffs.forget_after
                             THEN excluded.forget_after
                             ELSE subject_cutoffs.forget_after END",
                )
                .bind(&cutoff.sub)
                .bind(cutoff.not_before)
                .bind(cutoff.forget_after)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl ApiKeyStore for $store {
            async fn create_api_key(
                &self,
                key: &ApiKey,
                secret_hash: &[u8],
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO api_keys (id, name, secret_hash, scopes, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&key.id)
                .bind(&key.name)
                .bind(secret_hash)
                .bind(roles_json(&key.scopes)?)
                .bind(key.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn api_key(&self, id: &str) -> Result<Option<ApiKeyCredentials>, StoreError> {
                sqlx::query_as::<_, ApiKeyCredentialsRow>(&format!(
                    "SELECT {API_KEY_COLUMNS}, secret_hash FROM api_keys WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
                sqlx::query_as::<_, ApiKeyRow>(&format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
            }

            async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::copy::TableCopy for $store {
            async fn count_rows(
                &self,
                table: &$crate::store::copy::Table,
            ) -> Result<u64, StoreError> {
                let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", table.name))
                    .fetch_one(&self.pool)
                    .await?;
                Ok(count.max(0) as u64)
            }

            async fn read_rows(
                &self,
                table: &$crate::store::copy::Table,
            ) -> Result<Vec<Vec<$crate::store::copy::Cell>>, StoreError> {
                use $crate::store::copy::{Cell, Kind};
                use sqlx::Row;
                let rows = sqlx::query(&table.select_sql())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        table
                            .columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, kind))| {
                                Ok(match kind {
                                    Kind::Text => Cell::Text(row.try_get(i)?),
                                    Kind::Int => Cell::Int(row.try_get(i)?),
                                    Kind::Bytes => Cell::Bytes(row.try_get(i)?),
                                })
                            })
                            .collect()
                    })
                    .collect()
            }

            async fn write_rows(
                &self,
                table: &$crate::store::copy::Table,
                rows: &[Vec<$crate::store::copy::Cell>],
            ) -> Result<u64, StoreError> {
                use $crate::store::copy::Cell;
                let sql = table.insert_sql();
                let mut tx = self.pool.begin().await?;
                let mut written = 0;
                for row in rows {
                    let mut query = sqlx::query(&sql);
                    for cell in row {
                        query = match cell {
                            Cell::Text(v) => query.bind(v.clone()),
                            Cell::Int(v) => query.bind(*v),
                            Cell::Bytes(v) => query.bind(v.clone()),
                        };
                    }
                    written += query.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(written)
            }
        }
    };
}

pub(super) use sql_store;
