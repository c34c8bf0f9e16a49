//! Tokens and message keys for the simulated users, minted with the server's own secrets.
//!
//! Every connection gets its own token with a `sid` chosen here, so the generator derives the
//! same message key the server derives (`derive_message_key(envelope master, sid)`) and signs
//! envelopes the server accepts. Tokens are minted before a scenario's clock starts.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use signet_protocol::envelope::{derive_message_key, MessageKey};
use signet_protocol::secret::Secret;
use signet_protocol::token::{hmac_kid, AccessClaims};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server's secrets and token settings, as the generator needs them.
pub struct Credentials {
    jwt_key: EncodingKey,
    kid: String,
    envelope_master: Option<Secret>,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// Distinguishes this run's sessions from an earlier run's on the same server.
    run_id: String,
}

/// One simulated client: its token and, when the envelope secret is known, its message key.
pub struct Identity {
    pub sub: String,
    pub session: String,
    pub token: String,
    pub message_key: Option<MessageKey>,
}

impl Credentials {
    /// `jwt_secret` and `envelope_secret` are the texts the server was configured with
    /// (`SIGNET__JWT__SECRET`, `SIGNET__ENVELOPE__SECRET`); their bytes follow the server's rule.
    pub fn new(
        jwt_secret: &str,
        envelope_secret: Option<&str>,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Self {
        let secret = Secret::from_text(jwt_secret);
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Self {
            jwt_key: EncodingKey::from_secret(secret.expose()),
            kid: hmac_kid(&secret),
            envelope_master: envelope_secret.map(Secret::from_text),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ttl,
            run_id: format!("{run_id:x}"),
        }
    }

    pub fn has_envelope_secret(&self) -> bool {
        self.envelope_master.is_some()
    }

    /// The identity of connection `index`: user `bench-user-<index % users>`, its own session.
    pub fn identity(
        &self,
        kind: &str,
        index: usize,
        users: usize,
        roles: &[&str],
    ) -> Result<Identity, jsonwebtoken::errors::Error> {
        let sub = format!("bench-{kind}-{}", index % users.max(1));
        let session = format!("bench-{}-{kind}-{index}", self.run_id);
        self.identity_of(sub, session, roles)
    }

    /// A token for `sub` (a real user's id, say, so an admin revoke reaches it) in `session`,
    /// minted now with the configured lifetime.
    pub fn identity_of(
        &self,
        sub: String,
        session: String,
        roles: &[&str],
    ) -> Result<Identity, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let claims = AccessClaims {
            sub: sub.clone(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            jti: session.clone(),
            sid: Some(session.clone()),
            owner: None,
            name: None,
            iat: now,
            nbf: now,
            exp: now.saturating_add(self.ttl.as_secs() as i64),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.jwt_key)?;
        let message_key = self
            .envelope_master
            .as_ref()
            .map(|master| derive_message_key(master.expose(), &session));
        Ok(Identity {
            sub,
            session,
            token,
            message_key,
        })
    }
}
