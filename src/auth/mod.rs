//! Authentication: verifying tokens (key ring), finding them on a request (token source),
//! and the principal they prove. Revocation is consulted here, so every route and every hub
//! connection gets the same answer.

pub(crate) mod issue;
mod keyring;
mod principal;
mod token_source;

pub use issue::{AccessClaims, IssuedToken};
pub use keyring::{hmac_kid, KeyRing, KeyRingError, TokenError};
pub use principal::{Principal, TokenClaims, DOTNET_ROLE_CLAIM};
pub use token_source::{
    query_param, token_from_request, Authenticated, TokenLocation, HUB_PATH_PREFIX,
};

use std::sync::Arc;

/// Verifies tokens for every entry point (REST extractor, negotiate, transports, in-band refresh).
#[derive(Clone, Debug)]
pub struct Authenticator {
    keyring: Arc<KeyRing>,
}

impl Authenticator {
    pub fn new(keyring: Arc<KeyRing>) -> Self {
        Self { keyring }
    }

    /// Verifies `token` and returns the principal it proves.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, TokenError> {
        self.keyring.verify(token)
    }

    pub fn keyring(&self) -> &KeyRing {
        &self.keyring
    }
}
