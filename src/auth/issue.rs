//! Access tokens Signet issues itself (the CLI's `token mint` and, later, the login API).

use super::KeyRing;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The claims of an access token Signet issues.
#[derive(Debug, Clone, Serialize)]
pub struct AccessClaims {
    pub sub: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// A freshly signed token and the facts callers need without decoding it again.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: i64,
}

/// 16 random bytes, base64url: the shape of every random identifier Signet hands out.
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

impl AccessClaims {
    /// Claims for `sub` valid from now for `ttl`, with a fresh `jti`, this ring's `iss` and `aud`.
    pub fn new(ring: &KeyRing, sub: impl Into<String>, roles: Vec<String>, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            sub: sub.into(),
            roles,
            jti: random_id(),
            sid: None,
            owner: None,
            name: None,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs() as i64),
            iss: ring.issuer().to_string(),
            aud: ring.audience().to_string(),
        }
    }
}

impl KeyRing {
    /// Signs `claims` with the current key.
    pub fn issue(&self, claims: &AccessClaims) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        Ok(IssuedToken {
            token: self.sign(claims)?,
            jti: claims.jti.clone(),
            expires_at: claims.exp,
        })
    }
}
