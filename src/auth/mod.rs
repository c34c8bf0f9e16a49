//! Authentication: verifying tokens (key ring), finding them on a request (token source),
//! and the principal they prove. Revocation is consulted here, so every route and every hub
//! connection gets the same answer.

pub(crate) mod issue;
mod keyring;
mod principal;
pub mod revocation;
mod token_source;

pub use issue::{AccessClaims, IssuedToken};
pub use keyring::{hmac_kid, KeyRing, KeyRingError, TokenError};
pub use principal::{Principal, TokenClaims, DOTNET_ROLE_CLAIM};
pub use revocation::{
    FeedSource, InProcessRevocations, RevocationCause, RevocationError, RevocationEvent,
    RevocationRelay, RevocationState, RevocationStore, Revoked, StoreUnavailable,
};
pub use token_source::{
    authenticate_request, bearer_token, query_param, token_from_request, Authenticated,
    RequestAuthError, TokenLocation, TokenPolicy, HUB_PATH_PREFIX,
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
