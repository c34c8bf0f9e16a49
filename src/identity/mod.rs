//! The identity service: Signet as its own token issuer. Logins open sessions whose refresh
//! tokens rotate on every use; devices are provisioned once with a key and exchange it for
//! short-lived tokens; revocations go to the [`crate::auth::RevocationStore`] that every
//! request consults.
//!
//! Token subjects: a user's `sub` is their random user id (stable across renames, never
//! reused), with the username in `name`; a device's is `device:<deviceId>`, with role `device`
//! and its owner's user id in `owner`.
//!
//! Every security-relevant outcome is an audit event (`tracing` target `audit`) with the
//! subject and client address, never a secret.

mod api_keys;
mod devices;
mod limiter;
mod message_keys;
mod password;
mod sessions;
mod users;

pub use api_keys::{scopes_allow, ApiKeys, PublishAction, API_KEY_PREFIX};
pub use devices::{device_subject, NewDeviceKey};
pub use limiter::{LoginLimiter, LoginLimits};
pub use password::{HashingError, Passwords};
pub use sessions::SessionTokens;
pub use users::{UserAdmin, ADMIN_ROLE};

use crate::auth::issue::unix_now;
use crate::auth::{AccessClaims, Authenticator, Principal, RevocationError};
use crate::envelope::EnvelopeService;
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("too many failed logins; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    #[error("the refresh token was used before; its session is revoked")]
    RefreshTokenReused,
    #[error("invalid device id or key")]
    InvalidDeviceCredentials,
    #[error("no such device")]
    DeviceNotFound,
    #[error("no such user")]
    UserNotFound,
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("no such API key, or it is revoked already")]
    ApiKeyNotFound,
    #[error("the username is already taken")]
    UsernameTaken,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("a user may own at most {0} devices")]
    DeviceLimit(u32),
    #[error("`{field}`: {rule}")]
    Invalid { field: &'static str, rule: String },
    #[error("this token carries neither jti nor sid, so it cannot be revoked before it expires")]
    NotRevocable,
    #[error("the subject's tokens are revoked")]
    Revoked,
    #[error("this token carries neither sid nor jti, so it has no message key")]
    NoMessageKey,
    #[error("Signet's access tokens never yield their message key: it comes with login, refresh and the device-token exchange")]
    MessageKeyNotClaimable,
    #[error("this session's message key was already claimed")]
    MessageKeyClaimed,
    #[error("too many message-key claims are tracked; retry later")]
    MessageKeyClaimsFull,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    #[error("token signing failed: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Hashing(#[from] HashingError),
    #[error("{0}")]
    Setup(String),
}

impl IdentityError {
    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            rule: rule.into(),
        }
    }
}

/// Formats an optional client address for audit events.
pub(crate) fn client_label(client: Option<IpAddr>) -> String {
    client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
}

/// How an attempted username that names no user is written to the audit log: it may be a
/// password typed into the wrong field, so never verbatim. `unknown:` and 12 hex digits of
/// HMAC-SHA256 under a key drawn at start-up: the same attempt gives the same mark while the
/// process runs (repeated guesses can be told apart and counted), and without the key, which
/// never leaves memory, the mark cannot be tested against candidate names.
pub(crate) struct UnknownNameMarks {
    key: [u8; 32],
}

impl UnknownNameMarks {
    fn new() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    pub(crate) fn mark(&self, attempted: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(attempted.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("unknown:{hex}")
    }
}

impl std::fmt::Debug for UnknownNameMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnknownNameMarks")
    }
}

/// 256 random bits, base64url: refresh tokens and device keys.
pub(crate) fn new_secret_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = secret_hash(&token);
    (token, hash)
}

/// What is stored of a refresh token or device key: its SHA-256. The tokens carry 256 random
/// bits, so a fast hash is enough (no password-style stretching needed).
pub(crate) fn secret_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A 256-bit token as handed out: 43 base64url characters. Anything else is refused unread.
pub(crate) fn is_secret_token_shaped(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Cheap-to-clone handle to the identity service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    auth: Authenticator,
    /// Derives message keys (the hub verifies envelopes with the same service).
    envelopes: Arc<EnvelopeService>,
    passwords: Passwords,
    api_keys: ApiKeys,
    limiter: LoginLimiter,
    unknown_names: UnknownNameMarks,
    message_key_claims: message_keys::MessageKeyClaims,
    access_ttl: Duration,
    session_ttl_secs: i64,
    max_devices_per_user: u32,
    max_sessions_per_user: u32,
}

impl IdentityService {
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        auth: Authenticator,
        envelopes: Arc<EnvelopeService>,
        passwords: Passwords,
    ) -> Self {
        let identity = &settings.identity;
        let days = i64::try_from(settings.jwt.refresh_token_lifetime_days).unwrap_or(365);
        Self {
            inner: Arc::new(Inner {
                api_keys: ApiKeys::new(store.clone()),
                store,
                auth,
                envelopes,
                passwords,
                limiter: LoginLimiter::new(LoginLimits {
                    max_failures: identity.login_max_failures,
                    max_failures_per_address: identity.login_max_failures_per_address,
                    window: Duration::from_secs(identity.login_failure_window_secs),
                    backoff_after: identity.login_backoff_after_failures,
                    max_backoff: Duration::from_secs(identity.login_max_backoff_secs),
                    capacity: identity.login_limiter_capacity,
                }),
                unknown_names: UnknownNameMarks::new(),
                message_key_claims: message_keys::MessageKeyClaims::new(
                    identity.message_key_claims_max,
                    settings.jwt.leeway_secs,
                ),
                access_ttl: Duration::from_secs(
                    settings
                        .jwt
                        .access_token_lifetime_minutes
                        .saturating_mul(60),
                ),
                session_ttl_secs: days.saturating_mul(86_400),
                max_devices_per_user: identity.max_devices_per_user,
                max_sessions_per_user: identity.max_sessions_per_user,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The publish API's keys.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.inner.api_keys
    }

    /// The caller's username: from the store for users, else the token's `name`, else `sub`.
    pub async fn username_of(&self, principal: &Principal) -> Result<String, IdentityError> {
        if let Some(user) = self.inner.store.user_by_id(&principal.sub).await? {
            return Ok(user.username);
        }
        Ok(principal
            .name
            .clone()
            .unwrap_or_else(|| principal.sub.clone()))
    }

    /// Signs `claims` once every subject they name may be issued tokens again: right after a
    /// revocation (cut-off at the next second) issuance waits for that second, so the new
    /// token's `iat` is past the cut-off.
    async fn issue(&self, claims: AccessClaims) -> Result<(String, i64, String), IdentityError> {
        let mut claims = claims;
        let revocations = self.inner.auth.revocations();
        let mut not_before = revocations.not_before(&claims.sub).await;
        if let Some(owner) = &claims.owner {
            not_before = not_before.max(revocations.not_before(owner).await);
        }
        if let Some(not_before) = not_before.filter(|nb| claims.iat < *nb) {
            if not_before > unix_now() + 2 {
                return Err(IdentityError::Revoked);
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let wait_ms = not_before.saturating_mul(1000).saturating_sub(now_ms);
            tokio::time::sleep(Duration::from_millis(wait_ms.clamp(0, 3000) as u64)).await;
            // `iat` must clear the cut-off; `nbf` must not be in the future should the wall
            // clock lag the timer by a hair.
            let now = unix_now();
            let ttl = claims.exp - claims.iat;
            claims.iat = now.max(not_before);
            claims.nbf = now.min(claims.iat);
            claims.exp = now + ttl;
        }
        let issued = self.inner.auth.keyring().issue(&claims)?;
        // Re-checked after signing: a revocation that landed while this token was being made
        // (its session revoked, or a cut-off the wait above was racing) refuses it now rather
        // than on first use. Revocations record what they refuse before they return, so a
        // token that passes here was issued before the revocation and is refused by it, or
        // after it and may stand.
        if self.inner.auth.authenticate(&issued.token).await.is_err() {
            return Err(IdentityError::Revoked);
        }
        let session = claims.sid.as_deref().unwrap_or(&claims.jti);
        let message_key = self.inner.envelopes.message_key(session).to_base64url();
        Ok((issued.token, issued.expires_at, message_key))
    }
}
