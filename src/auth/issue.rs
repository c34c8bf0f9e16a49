//! Access tokens Signet issues itself (the CLI's `token mint` and, later, the login API).

use super::KeyRing;
use base64::Engine;
use rand::RngCore;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use signet_protocol::token::AccessClaims;

/// A freshly signed token and the facts callers need without decoding it again.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: i64,
}

/// 16 random bytes (128 bits, from the thread's cryptographically secure generator),
/// base64url without padding: the shape of every random identifier Signet hands out, and one
/// a hub can use for its own (a command id, a request id) where guessing one must not pay.
///
/// ```
/// let id = signet::random_id();
/// assert_eq!(id.len(), 22);
/// assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
/// assert_ne!(id, signet::random_id());
/// ```
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl KeyRing {
    /// Claims for `sub` valid from now for `ttl`, with a fresh `jti`, this ring's `iss` and `aud`.
    pub fn claims(
        &self,
        sub: impl Into<String>,
        roles: Vec<String>,
        ttl: Duration,
    ) -> AccessClaims {
        let now = unix_now();
        AccessClaims {
            sub: sub.into(),
            roles,
            jti: random_id(),
            sid: None,
            owner: None,
            name: None,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs() as i64),
            iss: self.issuer().to_string(),
            aud: self.audience().to_string(),
        }
    }

    /// Signs `claims` with the current key.
    pub fn issue(&self, claims: &AccessClaims) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        Ok(IssuedToken {
            token: self.sign(claims)?,
            jti: claims.jti.clone(),
            expires_at: claims.exp,
        })
    }
}
