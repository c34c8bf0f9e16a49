//! Authentication: verifying tokens (key ring), finding them on a request (token source),
//! and the principal they prove. Revocation is consulted here, so every route and every hub
//! connection gets the same answer.

pub(crate) mod issue;
mod keyring;
mod principal;
pub mod revocation;
mod token_source;

pub use issue::AccessClaims;
pub use keyring::{hmac_kid, KeyRing, KeyRingError, TokenError};
pub use principal::Principal;
pub use revocation::{
    FeedSource, InProcessRevocations, RevocationCause, RevocationError, RevocationEvent,
    RevocationRelay, RevocationState, RevocationStore,
};
pub use token_source::{
    authenticate_request, authenticate_token, bearer_token, query_param, Authenticated,
    RequestAuthError, TokenDigest, TokenPolicy,
};

use crate::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Verifies tokens for every entry point (REST extractor, negotiate, transports, in-band
/// refresh): signature and claims through the key ring, then revocation.
#[derive(Clone)]
pub struct Authenticator {
    keyring: Arc<KeyRing>,
    revocations: Arc<dyn RevocationStore>,
    /// Where authentication failures (and the identity service's outcomes) are counted.
    metrics: Metrics,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keyring", &self.keyring)
            .field("revocations", &self.revocations)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(keyring: Arc<KeyRing>, revocations: Arc<dyn RevocationStore>) -> Self {
        Self {
            keyring,
            revocations,
            metrics: Metrics::default(),
        }
    }

    /// Counts into `metrics` (a new authenticator counts into a detached instance).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Verifies `token` and returns the principal it proves, unless it is revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, TokenError> {
        let principal = self
            .keyring
            .verify(token)
            .inspect_err(|e| self.metrics.auth_failed(e.code()))?;
        self.check_revocation(&principal)
            .await
            .inspect_err(|e| self.metrics.auth_failed(e.code()))?;
        Ok(principal)
    }

    /// Like [`Authenticator::authenticate`] but accepts a token whose `exp` has passed (it must
    /// still verify and be unrevoked). Only for requests on a live connection that holds a later
    /// token of the same user: the official clients send their first token on every
    /// long-polling and SSE request of a connection, also after an in-band refresh.
    pub async fn authenticate_past_expiry(&self, token: &str) -> Result<Principal, TokenError> {
        let principal = self
            .keyring
            .verify_past_expiry(token)
            .inspect_err(|e| self.metrics.auth_failed(e.code()))?;
        self.check_revocation(&principal)
            .await
            .inspect_err(|e| self.metrics.auth_failed(e.code()))?;
        Ok(principal)
    }

    /// Re-checks a token this server verified before (the same text, see [`TokenDigest`]) for
    /// what can have changed since: its expiry (with the configured leeway, as verification
    /// judges it) and revocation. Its signature, issuer, audience and key cannot have changed:
    /// the key ring is fixed for the life of the process.
    pub async fn recheck(&self, principal: &Principal) -> Result<(), TokenError> {
        let leeway = i64::try_from(self.keyring.leeway_secs()).unwrap_or(i64::MAX);
        if principal.expires_at.saturating_add(leeway) < issue::unix_now() {
            self.metrics.auth_failed(TokenError::Expired.code());
            return Err(TokenError::Expired);
        }
        self.check_revocation(principal)
            .await
            .inspect_err(|e| self.metrics.auth_failed(e.code()))
    }

    /// Asks again whether `principal`'s token is revoked: for live connections after a
    /// [`RevocationEvent`] that [`RevocationEvent::affects`] them. Fails closed: a token whose
    /// revocation cannot be checked is refused ([`TokenError::RevocationUnavailable`]).
    pub async fn check_revocation(&self, principal: &Principal) -> Result<(), TokenError> {
        match self.revocations.check(principal).await {
            Ok(RevocationState::Valid) => Ok(()),
            Ok(RevocationState::Revoked(reason)) => {
                tracing::debug!(sub = %principal.sub, %reason, "revoked token refused");
                Err(TokenError::Revoked)
            }
            Err(err) => {
                tracing::warn!(sub = %principal.sub, error = %err, "token refused: revocation unavailable");
                Err(TokenError::RevocationUnavailable)
            }
        }
    }

    /// Revocations from now on, for closing live connections.
    pub fn subscribe_revocations(&self) -> broadcast::Receiver<RevocationEvent> {
        self.revocations.subscribe()
    }

    pub fn revocations(&self) -> &Arc<dyn RevocationStore> {
        &self.revocations
    }

    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ResolvedSecrets;
    use crate::store::SqliteStore;
    use std::time::Duration;

    async fn authenticator(leeway_secs: u64) -> Authenticator {
        let env = [
            (
                "SIGNET__JWT__SECRET",
                "auth-test-jwt-secret-0123456789-abcdefghij",
            ),
            (
                "SIGNET__ENVELOPE__SECRET",
                "auth-test-envelope-secret-0123456789-abcd",
            ),
            ("SIGNET__JWT__LEEWAY_SECS", &leeway_secs.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let settings = crate::settings::load_from_str("", std::path::Path::new("test"), env)
            .expect("settings");
        let secrets = ResolvedSecrets::inspect(&settings).expect("secrets");
        let ring = KeyRing::new(&settings.jwt, &secrets).unwrap();
        let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let revocations = InProcessRevocations::load(store, leeway_secs, 16)
            .await
            .unwrap();
        Authenticator::new(Arc::new(ring), Arc::new(revocations))
    }

    #[tokio::test]
    async fn a_recheck_refuses_what_time_and_revocations_changed_since_verification() {
        let auth = authenticator(0).await;
        let ring = auth.keyring();
        let claims = ring.claims("alice", vec![], Duration::from_secs(60));
        let token = ring.issue(&claims).unwrap().token;
        let principal = ring.verify(&token).unwrap();
        assert_eq!(auth.recheck(&principal).await, Ok(()));

        let expired = Principal {
            expires_at: issue::unix_now() - 2,
            ..principal.clone()
        };
        assert_eq!(auth.recheck(&expired).await, Err(TokenError::Expired));
        // As verification judges it: within the leeway, still valid.
        let lenient = authenticator(30).await;
        assert_eq!(lenient.recheck(&expired).await, Ok(()));

        auth.revocations()
            .deny_token(&claims.jti, claims.exp, RevocationCause::Logout)
            .await
            .unwrap();
        assert_eq!(auth.recheck(&principal).await, Err(TokenError::Revoked));
    }
}
