//! Row mapping both backends share: each table's columns are read in one place, by name,
//! through `sqlx::FromRow`, whichever database the row came from.

use super::{
    ApiKey, ApiKeyCredentials, Device, DeviceCredentials, Session, StoreError, SubjectCutoff, User,
    UserCredentials,
};

/// The columns a [`User`] is read from; `roles` is a JSON array in both backends.
pub(super) const USER_COLUMNS: &str = "id, username, roles, created_at";
pub(super) const API_KEY_COLUMNS: &str = "id, name, scopes, created_at, revoked_at";
pub(super) const DEVICE_COLUMNS: &str =
    "id, owner_id, name, created_at, key_rotated_at, last_token_at";

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    username: String,
    roles: String,
    created_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        let roles = serde_json::from_str(&row.roles)
            .map_err(|e| StoreError::Corrupt(format!("roles of a user: {e}")))?;
        Ok(User {
            id: row.id,
            username: row.username,
            roles,
            created_at: row.created_at,
        })
    }
}

/// The JSON text `roles` is stored as.
pub(super) fn roles_json(roles: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(roles).map_err(|e| StoreError::Corrupt(format!("roles: {e}")))
}

#[derive(sqlx::FromRow)]
pub(super) struct UserCredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl TryFrom<UserCredentialsRow> for UserCredentials {
    type Error = StoreError;

    fn try_from(row: UserCredentialsRow) -> Result<Self, StoreError> {
        Ok(UserCredentials {
            user: row.user.try_into()?,
            password_hash: row.password_hash,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeviceRow {
    id: String,
    owner_id: String,
    name: String,
    created_at: i64,
    key_rotated_at: i64,
    last_token_at: Option<i64>,
}

impl From<DeviceRow> for Device {
    fn from(row: DeviceRow) -> Self {
        Device {
            id: row.id,
            owner_id: row.owner_id,
            name: row.name,
            created_at: row.created_at,
            key_rotated_at: row.key_rotated_at,
            last_token_at: row.last_token_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeviceCredentialsRow {
    #[sqlx(flatten)]
    device: DeviceRow,
    key_hash: Vec<u8>,
}

impl From<DeviceCredentialsRow> for DeviceCredentials {
    fn from(row: DeviceCredentialsRow) -> Self {
        DeviceCredentials {
            device: row.device.into(),
            key_hash: row.key_hash,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: String,
    user_id: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            id: row.id,
            user_id: row.user_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CutoffRow {
    sub: String,
    not_before: i64,
    forget_after: Option<i64>,
}

impl From<CutoffRow> for SubjectCutoff {
    fn from(row: CutoffRow) -> Self {
        SubjectCutoff {
            sub: row.sub,
            not_before: row.not_before,
            forget_after: row.forget_after,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ApiKeyRow {
    id: String,
    name: String,
    scopes: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        let scopes = serde_json::from_str(&row.scopes)
            .map_err(|e| StoreError::Corrupt(format!("scopes of an API key: {e}")))?;
        Ok(ApiKey {
            id: row.id,
            name: row.name,
            scopes,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ApiKeyCredentialsRow {
    #[sqlx(flatten)]
    key: ApiKeyRow,
    secret_hash: Vec<u8>,
}

impl TryFrom<ApiKeyCredentialsRow> for ApiKeyCredentials {
    type Error = StoreError;

    fn try_from(row: ApiKeyCredentialsRow) -> Result<Self, StoreError> {
        Ok(ApiKeyCredentials {
            key: row.key.try_into()?,
            secret_hash: row.secret_hash,
        })
    }
}
