//! Login sessions: login, refresh rotation with reuse detection, logout, and an
//! administrator's revocation of everything a user holds.

use super::limiter::{retry_after_secs, AttemptKeys};
use super::password::{HashingError, MAX_PASSWORD_BYTES};
use super::users::{is_valid_username, normalize_username};
use super::{
    client_label, is_secret_token_shaped, new_secret_token, secret_hash, IdentityError,
    IdentityService,
};
use crate::auth::issue::{random_id, unix_now};
use crate::auth::revocation::MAX_ACCESS_TOKEN_LIFETIME_SECS;
use crate::auth::{Principal, RevocationCause};
use crate::store::{Rotation, Session, User};
use std::net::IpAddr;

/// What a login or a refresh hands out. `refresh_token` is shown once and stored only hashed.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub message_key: String,
}

impl IdentityService {
    /// Checks a username and password. Unknown user and wrong password fail alike, and alike
    /// in time (an unknown user costs a verification against a dummy hash). Failures are
    /// throttled per (username, address), per address and per username (see [`LoginLimiter`]);
    /// the audit log names an attempted username only when it is a user's.
    ///
    /// [`LoginLimiter`]: super::LoginLimiter
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionTokens, IdentityError> {
        let username = normalize_username(username);
        let valid = is_valid_username(&username);
        let found = if valid {
            self.inner.store.user_by_name(&username).await?
        } else {
            None
        };
        let shown_name = match &found {
            Some(credentials) => credentials.user.username.clone(),
            None => self.inner.unknown_names.mark(&username),
        };
        // Names that cannot exist share one bucket, so junk cannot grow the limiter's keys.
        let keys = AttemptKeys::new(if valid { &username } else { "[invalid]" }, client);
        if let Err(wait) = self.inner.limiter.begin(&keys) {
            let retry_after_secs = retry_after_secs(wait);
            tracing::warn!(
                target: "audit", event = "login", outcome = "rate_limited",
                username = %shown_name, client = %client_label(client), retry_after_secs,
            );
            self.inner.auth.metrics().login("rate_limited");
            self.inner.auth.metrics().rate_limited("login");
            return Err(IdentityError::RateLimited { retry_after_secs });
        }
        let matched = if password.len() > MAX_PASSWORD_BYTES {
            false
        } else {
            let stored = found.as_ref().map(|c| c.password_hash.as_str());
            match self.inner.passwords.verify(password, stored).await {
                Ok(matched) => matched,
                Err(err) => {
                    // Nothing was checked: the attempt is not a failure.
                    self.inner.limiter.abandoned(&keys);
                    if matches!(err, HashingError::Busy) {
                        tracing::warn!(
                            target: "audit", event = "login", outcome = "busy",
                            username = %shown_name, client = %client_label(client),
                        );
                        self.inner.auth.metrics().login("busy");
                    }
                    return Err(err.into());
                }
            }
        };
        let user = match found {
            Some(credentials) if matched => credentials.user,
            _ => {
                tracing::warn!(
                    target: "audit", event = "login", outcome = "failure",
                    username = %shown_name, client = %client_label(client),
                );
                self.inner.auth.metrics().login("failure");
                return Err(IdentityError::InvalidCredentials);
            }
        };
        self.inner.limiter.succeeded(&keys);
        let tokens = self.open_session(&user).await?;
        tracing::info!(
            target: "audit", event = "login", outcome = "success",
            sub = %user.id, username = %user.username, client = %client_label(client),
        );
        self.inner.auth.metrics().login("success");
        Ok(tokens)
    }

    async fn open_session(&self, user: &User) -> Result<SessionTokens, IdentityError> {
        let now = unix_now();
        let session = Session {
            id: random_id(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now.saturating_add(self.inner.session_ttl_secs),
            revoked_at: None,
        };
        let (refresh_token, refresh_hash) = new_secret_token();
        let evicted = self
            .inner
            .store
            .create_session(&session, &refresh_hash, self.inner.max_sessions_per_user)
            .await?;
        for sid in evicted {
            self.revoke_session_tokens(&sid, RevocationCause::SessionLimit)
                .await?;
            tracing::info!(
                target: "audit", event = "session_evicted", sub = %user.id, sid = %sid,
            );
        }
        self.session_tokens(user, &session.id, refresh_token).await
    }

    async fn session_tokens(
        &self,
        user: &User,
        sid: &str,
        refresh_token: String,
    ) -> Result<SessionTokens, IdentityError> {
        let mut claims = self.inner.auth.keyring().claims(
            user.id.clone(),
            user.roles.clone(),
            self.inner.access_ttl,
        );
        claims.sid = Some(sid.to_string());
        claims.name = Some(user.username.clone());
        let (access_token, expires_at, message_key) = self.issue(claims).await?;
        Ok(SessionTokens {
            access_token,
            refresh_token,
            expires_in: expires_at - unix_now(),
            message_key,
        })
    }

    /// Uses a refresh token once: a new access token and a new refresh token in the same
    /// session. A token presented a second time revokes the whole session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: Option<IpAddr>,
    ) -> Result<SessionTokens, IdentityError> {
        if !is_secret_token_shaped(refresh_token) {
            self.inner
                .auth
                .metrics()
                .token_refreshed("session", "invalid");
            return Err(IdentityError::InvalidRefreshToken);
        }
        let (next_token, next_hash) = new_secret_token();
        let presented = secret_hash(refresh_token);
        let now = unix_now();
        let rotation = self
            .inner
            .store
            .rotate_refresh_token(&presented, &next_hash, now)
            .await?;
        let session = match rotation {
            Rotation::Rotated(session) => session,
            Rotation::Reused(session) => {
                self.revoke_session_tokens(&session.id, RevocationCause::RefreshTokenReused)
                    .await?;
                tracing::warn!(
                    target: "audit", event = "refresh", outcome = "reuse_detected",
                    sub = %session.user_id, sid = %session.id, client = %client_label(client),
                );
                self.inner
                    .auth
                    .metrics()
                    .token_refreshed("session", "reuse_detected");
                return Err(IdentityError::RefreshTokenReused);
            }
            Rotation::Invalid => {
                tracing::info!(
                    target: "audit", event = "refresh", outcome = "invalid",
                    client = %client_label(client),
                );
                self.inner
                    .auth
                    .metrics()
                    .token_refreshed("session", "invalid");
                return Err(IdentityError::InvalidRefreshToken);
            }
        };
        let Some(user) = self.inner.store.user_by_id(&session.user_id).await? else {
            return Err(IdentityError::InvalidRefreshToken);
        };
        // Roles are read again, so a change applies from the next refresh on.
        let tokens = match self.session_tokens(&user, &session.id, next_token).await {
            Err(IdentityError::Revoked) => {
                // The session was revoked while this refresh was under way.
                tracing::info!(
                    target: "audit", event = "refresh", outcome = "revoked",
                    sub = %user.id, sid = %session.id, client = %client_label(client),
                );
                self.inner
                    .auth
                    .metrics()
                    .token_refreshed("session", "revoked");
                return Err(IdentityError::InvalidRefreshToken);
            }
            other => other?,
        };
        tracing::info!(
            target: "audit", event = "refresh", outcome = "success",
            sub = %user.id, sid = %session.id, client = %client_label(client),
        );
        self.inner
            .auth
            .metrics()
            .token_refreshed("session", "success");
        Ok(tokens)
    }

    /// Ends the caller's token at once (its `jti` is denied until it expires) and its session;
    /// a refresh token of another session of the same user is revoked with it.
    pub async fn logout(
        &self,
        principal: &Principal,
        refresh_token: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        if principal.jti.is_none() && principal.sid.is_none() {
            return Err(IdentityError::NotRevocable);
        }
        let revocations = self.inner.auth.revocations();
        if let Some(jti) = &principal.jti {
            revocations
                .deny_token(jti, principal.expires_at, RevocationCause::Logout)
                .await?;
        }
        let mut sessions: Vec<String> = principal.sid.iter().cloned().collect();
        if let Some(token) = refresh_token.filter(|t| is_secret_token_shaped(t)) {
            let hash = secret_hash(token);
            match self.inner.store.session_of_refresh_token(&hash).await? {
                Some(session)
                    if session.user_id == principal.sub && !sessions.contains(&session.id) =>
                {
                    sessions.push(session.id)
                }
                Some(session) if session.user_id == principal.sub => {}
                // Someone else's refresh token: not the caller's to end.
                Some(_) => tracing::warn!(
                    target: "audit", event = "logout", outcome = "foreign_refresh_token",
                    sub = %principal.sub, client = %client_label(client),
                ),
                None => {}
            }
        }
        let now = unix_now();
        for sid in &sessions {
            self.inner
                .store
                .revoke_session(sid, RevocationCause::Logout.as_str(), now)
                .await?;
            let until = principal
                .expires_at
                .max(now + MAX_ACCESS_TOKEN_LIFETIME_SECS);
            revocations
                .revoke_session(sid, until, RevocationCause::Logout)
                .await?;
        }
        tracing::info!(
            target: "audit", event = "logout", outcome = "success",
            sub = %principal.sub, sessions = sessions.len(), client = %client_label(client),
        );
        Ok(())
    }

    /// Refuses every access token of session `sid` that is still valid.
    async fn revoke_session_tokens(
        &self,
        sid: &str,
        cause: RevocationCause,
    ) -> Result<(), IdentityError> {
        let until = unix_now() + MAX_ACCESS_TOKEN_LIFETIME_SECS;
        self.inner
            .auth
            .revocations()
            .revoke_session(sid, until, cause)
            .await?;
        Ok(())
    }

    /// An administrator revokes everything `username` holds: every token issued to them (or
    /// to their devices) before now is refused from now on, their sessions end, and their
    /// devices' keys stop working (the owner re-keys each device once allowed back in).
    ///
    /// The order makes a concurrent refresh, device-token exchange or login linearizable with
    /// the revoke: the sessions are ended and their ids recorded as revoked, and the device
    /// keys replaced, before the cut-off moves. Issuance waits out a fresh cut-off and then
    /// re-checks the token it made (see `issue`), and the device exchange re-reads its key, so
    /// a token made during the revoke either carries a revoked `sid`, is older than the
    /// cut-off, or comes from a credential that was replaced: refused in every case.
    pub async fn revoke_user(
        &self,
        admin: &Principal,
        username: &str,
        client: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let username = normalize_username(username);
        let Some(credentials) = self.inner.store.user_by_name(&username).await? else {
            return Err(IdentityError::UserNotFound);
        };
        let user = credentials.user;
        let sessions = self
            .inner
            .store
            .revoke_user_sessions(&user.id, RevocationCause::AdminRevoked.as_str(), unix_now())
            .await?;
        for sid in &sessions {
            self.revoke_session_tokens(sid, RevocationCause::AdminRevoked)
                .await?;
        }
        let devices = self.revoke_owned_device_keys(&user.id).await?;
        // Cut-off at the next second: tokens are stamped in whole seconds, so every token of
        // this second is refused; issuing to this user waits for the next one.
        self.inner
            .auth
            .revocations()
            .revoke_user_before(&user.id, unix_now() + 1, RevocationCause::AdminRevoked)
            .await?;
        tracing::warn!(
            target: "audit", event = "admin_revoke_user", sub = %user.id,
            username = %user.username, sessions = sessions.len(), devices, by = %admin.sub,
            client = %client_label(client),
        );
        Ok(())
    }
}
