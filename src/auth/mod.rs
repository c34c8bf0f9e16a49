//! Authentication: verifying tokens (key ring), finding them on a request (token source),
//! and the principal they prove. Revocation is consulted here, so every route and every hub
//! connection gets the same answer.

pub(crate) mod issue;
mod keyring;
mod message_key;
mod principal;
pub mod revocation;
mod token_source;

pub use issue::{AccessClaims, IssuedToken};
pub use keyring::{hmac_kid, KeyRing, KeyRingError, TokenError};
pub use message_key::message_key_id;
pub use principal::{Principal, TokenClaims, DOTNET_ROLE_CLAIM};
pub use revocation::{
    InProcessRevocations, RevocationError, RevocationEvent, RevocationStore, Revoked,
};
pub use token_source::{token_from_request, Authenticated, TokenLocation};

use crate::settings::Secret;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Verifies tokens for every entry point (REST extractor, negotiate, transports, in-band
/// refresh): signature and claims through the key ring, then revocation.
#[derive(Clone)]
pub struct Authenticator {
    keyring: Arc<KeyRing>,
    revocations: Arc<dyn RevocationStore>,
    message_master: Arc<Secret>,
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
    /// `message_master` is the envelope master key that message keys derive from.
    pub fn new(
        keyring: Arc<KeyRing>,
        revocations: Arc<dyn RevocationStore>,
        message_master: Secret,
    ) -> Self {
        Self {
            keyring,
            revocations,
            message_master: Arc::new(message_master),
        }
    }

    /// Verifies `token` and returns the principal it proves, unless it is revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, TokenError> {
        let principal = self.keyring.verify(token)?;
        self.check_revocation(&principal).await?;
        Ok(principal)
    }

    /// Asks again whether `principal`'s token is revoked: for live connections after a
    /// [`RevocationEvent`] that [`RevocationEvent::affects`] them.
    pub async fn check_revocation(&self, principal: &Principal) -> Result<(), TokenError> {
        self.revocations.check(principal).await.map_err(|reason| {
            tracing::debug!(sub = %principal.sub, %reason, "revoked token refused");
            TokenError::Revoked
        })
    }

    /// The key `principal` signs envelopes with (base64url, no padding): HMAC-SHA256 of the
    /// envelope master key over `"signet-msgkey-v1:" + sid` (or `+ jti` without `sid`).
    /// `None` when the token has neither.
    pub fn message_key(&self, principal: &Principal) -> Option<String> {
        message_key::message_key(&self.message_master, principal)
    }

    /// The message key of a token with these `sid` and `jti` claims (for tokens just issued).
    pub fn message_key_for(&self, sid: Option<&str>, jti: Option<&str>) -> Option<String> {
        message_key::message_key_from(&self.message_master, sid, jti)
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
