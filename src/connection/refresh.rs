//! In-band refresh: a connection moves onto a fresh token of the same principal without
//! reconnecting, and takes its expiry and roles. Both ways in, `POST /hubs/{hub}/refresh` and
//! the `RefreshToken` hub method, go through [`refresh`], so they check the same things in the
//! same order and their callers read the same texts.

use super::{admit, Connection, ConnectionRegistry};
use crate::auth::{issue::unix_now, Authenticator, Principal};

/// Why an in-band refresh was refused. The texts are what both callers read: the HTTP answer's
/// `message` (its `error` is [`RefreshError::code`]) and the hub method's error,
/// `<code>: <text>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The new token did not verify, has expired or was revoked (the reason goes to the log).
    #[error("the new token is not valid")]
    InvalidToken,
    /// The new token names another principal than the connection's.
    #[error("the new token belongs to another user than the connection")]
    UserMismatch,
    /// The new token was revoked while the connection moved onto it: the connection is closed.
    #[error("the new token was revoked; the connection is closed")]
    Revoked,
    /// No connection with the token a refresh request names.
    #[error("no connection with this id")]
    UnknownConnection,
    /// The connection closed before it could move onto the new token.
    #[error("the connection is closed")]
    Closed,
    /// Whether the new token is revoked could not be checked (the revocation store is
    /// unavailable): refused for now, fail closed; the connection keeps its current token.
    #[error("the new token could not be checked against revocations; try again later")]
    StoreUnavailable,
}

impl RefreshError {
    /// The machine-readable code (the HTTP answer's `error`).
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidToken | Self::Revoked => "invalid_token",
            Self::UserMismatch => "user_mismatch",
            Self::UnknownConnection | Self::Closed => "unknown_connection",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

/// Refreshes `connection` onto `token`: verifies the token (valid now, unrevoked), moves the
/// connection onto it and checks its revocation once more, then audits and counts the refresh.
/// `connection` is `None` when the request named no connection the server holds: the token
/// is judged first all the same, so an invalid token is always answered as such. `via` names
/// the way in for the audit log. Returns the new token's remaining lifetime in seconds.
pub async fn refresh(
    auth: &Authenticator,
    registry: &ConnectionRegistry,
    connection: Option<&Connection>,
    token: &str,
    via: &'static str,
) -> Result<i64, RefreshError> {
    let principal = verify_refresh(auth, token).await?;
    apply_refresh(auth, registry, connection, principal, via).await
}

/// The first half of [`refresh`]: the new token verified (valid now, unrevoked), refusals
/// counted. A cluster node that does not hold the connection verifies here and forwards the
/// principal, never the token, to the node that does.
pub async fn verify_refresh(auth: &Authenticator, token: &str) -> Result<Principal, RefreshError> {
    auth.authenticate(token).await.map_err(|err| {
        tracing::debug!(reason = err.code(), "in-band refresh refused");
        // An unreachable revocation store is not a bad token: counted apart, for operators.
        let (refused, outcome) = match err {
            crate::auth::TokenError::RevocationUnavailable => {
                (RefreshError::StoreUnavailable, "store_unavailable")
            }
            _ => (RefreshError::InvalidToken, "invalid"),
        };
        auth.metrics().token_refreshed("connection", outcome);
        refused
    })
}

/// The second half of [`refresh`]: `connection` moved onto the verified `principal`, audited
/// and counted.
pub async fn apply_refresh(
    auth: &Authenticator,
    registry: &ConnectionRegistry,
    connection: Option<&Connection>,
    principal: Principal,
    via: &'static str,
) -> Result<i64, RefreshError> {
    let connection = connection.ok_or(RefreshError::UnknownConnection)?;
    let sub = principal.sub.clone();
    let lifetime = carry_on(auth, registry, connection, principal).await?;
    tracing::info!(target: "audit", event = "token_refreshed", via, %sub, connection = %connection.log_id(), "connection token refreshed");
    auth.metrics().token_refreshed("connection", "success");
    Ok(lifetime)
}

/// Moves `connection` onto the verified `principal` ([`ConnectionRegistry::refresh`]), then
/// asks once more whether its token is revoked ([`admit`], which closes the connection if it
/// is). [`refresh`] does this after verifying a token; a transport request does it on its own
/// when it carries a later token of the connection's user. Returns the remaining lifetime.
pub async fn carry_on(
    auth: &Authenticator,
    registry: &ConnectionRegistry,
    connection: &Connection,
    principal: Principal,
) -> Result<i64, RefreshError> {
    let lifetime = registry.refresh(connection, principal, unix_now())?;
    if !admit(auth, connection).await {
        return Err(RefreshError::Revoked);
    }
    Ok(lifetime)
}
