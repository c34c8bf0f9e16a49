//! Message keys for tokens Signet did not issue. A Signet login, refresh or device-token
//! exchange hands out its message key with the tokens, and a Signet access token never yields
//! one on its own: browsers put access tokens in URLs (WebSocket and SSE query strings) where
//! proxies and logs keep them, and a leaked token must not be enough to sign commands.
//!
//! A token of an external identity provider has no Signet login to come with, so its holder
//! claims the key of its message session (`sid`, else `jti`) at `GET /api/auth/message-key`,
//! with the token in the `Authorization` header, at most `identity.message_key_claims_max`
//! times while a token of that session is valid. Whoever claims first holds the key; a thief
//! arriving later gets 409.

use super::{IdentityError, IdentityService};
use crate::auth::issue::unix_now;
use crate::auth::Principal;
use std::collections::HashMap;
use std::sync::Mutex;

/// Message sessions whose claims are tracked at once. The table is bounded and never evicts
/// a live record (that would allow a second claim): when it is full of them, claims are
/// answered 503 until records expire. Not a setting: it is a memory safety bound (records are
/// a few dozen bytes, the full table a few MB), not a tuning knob; records expire with their
/// access tokens.
pub const MAX_TRACKED_MESSAGE_KEY_CLAIMS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Claims {
    count: u32,
    /// Until when a token of the session can be valid (latest `exp` seen, plus leeway).
    until: i64,
}

/// Claims per message session, in memory: a restart forgets them (documented).
#[derive(Debug)]
pub(crate) struct MessageKeyClaims {
    max: u32,
    leeway_secs: i64,
    claims: Mutex<HashMap<String, Claims>>,
}

impl MessageKeyClaims {
    pub(crate) fn new(max: u32, leeway_secs: u64) -> Self {
        Self {
            max,
            leeway_secs: i64::try_from(leeway_secs).unwrap_or(i64::MAX),
            claims: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one claim of `session`, whose presented token expires at `expires_at`.
    fn claim(&self, session: &str, expires_at: i64, now: i64) -> Result<(), IdentityError> {
        if self.max == 0 {
            return Err(IdentityError::MessageKeyNotClaimable);
        }
        let until = expires_at.saturating_add(self.leeway_secs);
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(record) = claims.get_mut(session) {
            if record.until >= now {
                record.until = record.until.max(until);
                if record.count >= self.max {
                    return Err(IdentityError::MessageKeyClaimed);
                }
                record.count += 1;
                return Ok(());
            }
            claims.remove(session);
        }
        if claims.len() >= MAX_TRACKED_MESSAGE_KEY_CLAIMS {
            claims.retain(|_, record| record.until >= now);
            if claims.len() >= MAX_TRACKED_MESSAGE_KEY_CLAIMS {
                return Err(IdentityError::MessageKeyClaimsFull);
            }
        }
        claims.insert(session.to_string(), Claims { count: 1, until });
        Ok(())
    }
}

impl IdentityService {
    /// The message key for the presented token, if it may have it: only an external identity
    /// provider's token, and only `identity.message_key_claims_max` times per message session.
    pub fn claim_message_key(&self, principal: &Principal) -> Result<String, IdentityError> {
        if !self.inner.auth.keyring().is_external(&principal.kid) {
            return Err(IdentityError::MessageKeyNotClaimable);
        }
        let session = principal
            .message_session()
            .ok_or(IdentityError::NoMessageKey)?;
        if let Err(err) =
            self.inner
                .message_key_claims
                .claim(session, principal.expires_at, unix_now())
        {
            if matches!(err, IdentityError::MessageKeyClaimed) {
                tracing::warn!(
                    target: "audit", event = "message_key_claim", outcome = "already_claimed",
                    sub = %principal.sub,
                );
            }
            return Err(err);
        }
        tracing::info!(
            target: "audit", event = "message_key_claim", outcome = "success",
            sub = %principal.sub,
        );
        Ok(self.inner.envelopes.message_key(session).to_base64url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_claimed_at_most_max_times_while_its_tokens_live() {
        let claims = MessageKeyClaims::new(2, 0);
        assert!(claims.claim("s", 100, 50).is_ok());
        assert!(claims.claim("s", 100, 60).is_ok());
        assert!(matches!(
            claims.claim("s", 200, 70),
            Err(IdentityError::MessageKeyClaimed)
        ));
        // A later token of the session extended the record: still claimed at 150.
        assert!(matches!(
            claims.claim("s", 200, 150),
            Err(IdentityError::MessageKeyClaimed)
        ));
        assert!(claims.claim("s", 400, 201).is_ok());
        assert!(claims.claim("other", 100, 50).is_ok());
    }

    #[test]
    fn zero_turns_claims_off() {
        let claims = MessageKeyClaims::new(0, 0);
        assert!(matches!(
            claims.claim("s", 100, 50),
            Err(IdentityError::MessageKeyNotClaimable)
        ));
    }
}
