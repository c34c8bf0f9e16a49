//! Password hashing: argon2id with configured costs, always on the blocking pool so that a
//! login never stalls an async worker.

use crate::settings::IdentitySettings;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use std::sync::Arc;

/// Longest password accepted, in bytes: argon2 cost does not depend on it, but nothing
/// legitimate needs more and it bounds the work per request.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password a user may be given.
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashingError(String);

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    argon2: Arc<Argon2<'static>>,
    /// A hash of a password nobody knows, verified when the user does not exist so that an
    /// unknown name costs as much as a wrong password.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    pub async fn new(settings: &IdentitySettings) -> Result<Self, HashingError> {
        let params = Params::new(
            settings.password_hash_memory_kib,
            settings.password_hash_iterations,
            settings.password_hash_parallelism,
            None,
        )
        .map_err(|e| HashingError(e.to_string()))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let mut unknown = [0u8; 32];
        rand::rng().fill_bytes(&mut unknown);
        let dummy = {
            let argon2 = argon2.clone();
            blocking(move || hash_with(&argon2, &unknown)).await??
        };
        Ok(Self {
            argon2,
            dummy_hash: dummy.into(),
        })
    }

    /// An argon2id PHC string for `password`, with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashingError> {
        let argon2 = self.argon2.clone();
        let password = password.as_bytes().to_vec();
        blocking(move || hash_with(&argon2, &password)).await?
    }

    /// Whether `password` matches `stored`. With `None` (no such user) a dummy hash is verified
    /// and the answer is false, so both cases take the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashingError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy_hash).to_string();
        let dummy = self.dummy_hash.clone();
        let argon2 = self.argon2.clone();
        let password = password.as_bytes().to_vec();
        let matched = blocking(move || {
            let parsed = match PasswordHash::new(&hash) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::error!(error = %e, "a stored password hash does not parse");
                    // Still spend the time, then refuse.
                    let _ = PasswordHash::new(&dummy)
                        .map(|d| argon2.verify_password(&password, &d).is_ok());
                    return false;
                }
            };
            // Parameters and salt come from the stored hash, so older costs keep verifying.
            argon2.verify_password(&password, &parsed).is_ok()
        })
        .await?;
        Ok(known && matched)
    }
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, HashingError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashingError(e.to_string()))?;
    argon2
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashingError(e.to_string()))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashingError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HashingError(format!("hashing task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> IdentitySettings {
        IdentitySettings {
            password_hash_memory_kib: 64,
            password_hash_iterations: 1,
            ..IdentitySettings::default()
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id_with_the_configured_costs() {
        let passwords = Passwords::new(&cheap()).await.unwrap();
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(passwords
            .verify("correct horse", Some(&hash))
            .await
            .unwrap());
        assert!(!passwords.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("correct horse", None).await.unwrap());
        assert!(!passwords.verify("x", Some("not a hash")).await.unwrap());
        assert_ne!(
            hash,
            passwords.hash("correct horse").await.unwrap(),
            "salted"
        );
    }
}
