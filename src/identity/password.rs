//! Password hashing: argon2id with configured costs, always on the blocking pool so that a
//! login never stalls an async worker.

use crate::settings::IdentitySettings;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest password accepted, in bytes: argon2 cost does not depend on it, but nothing
/// legitimate needs more and it bounds the work per request.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password a user may be given. A floor, not a setting: no server should accept less.
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error("password hashing failed: {0}")]
    Failed(String),
    /// Every hashing slot stayed taken for the configured wait.
    #[error("the server is busy checking other passwords; retry shortly")]
    Busy,
}

/// Hashes and verifies passwords, at most `max_concurrent_password_hashes` at once (each holds
/// `password_hash_memory_kib` while it runs), so a login storm costs time, not memory.
/// Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    argon2: Arc<Argon2<'static>>,
    slots: Arc<Semaphore>,
    /// Verification memory, reused: see [`MemoryPool`].
    memory: Arc<MemoryPool>,
    /// How long a hash waits for a slot before giving up with [`HashingError::Busy`].
    wait: Duration,
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
        .map_err(|e| HashingError::Failed(e.to_string()))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let mut unknown = [0u8; 32];
        rand::rng().fill_bytes(&mut unknown);
        let dummy = {
            let argon2 = argon2.clone();
            blocking(move || hash_with(&argon2, &unknown)).await??
        };
        Ok(Self {
            argon2,
            slots: Arc::new(Semaphore::new(
                settings.max_concurrent_password_hashes.max(1),
            )),
            memory: Arc::default(),
            wait: Duration::from_millis(settings.password_hash_wait_ms),
            dummy_hash: dummy.into(),
        })
    }

    /// A hashing slot, waiting at most the configured time for one.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, HashingError> {
        let slots = self.slots.clone();
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(HashingError::Busy),
        }
    }

    /// An argon2id PHC string for `password`, with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashingError> {
        let permit = self.slot().await?;
        let argon2 = self.argon2.clone();
        let password = password.as_bytes().to_vec();
        blocking(move || {
            let _permit = permit;
            hash_with(&argon2, &password)
        })
        .await?
    }

    /// Whether `password` matches `stored`. With `None` (no such user) a dummy hash is verified
    /// and the answer is false, so both cases take the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, HashingError> {
        // Held by the blocking task, so an abandoned request still frees it only when done.
        let permit = self.slot().await?;
        let known = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy_hash).to_string();
        let dummy = self.dummy_hash.clone();
        let pool = self.memory.clone();
        let password = password.as_bytes().to_vec();
        let matched = blocking(move || {
            let _permit = permit;
            let mut memory = pool.take();
            let matched = match PasswordHash::new(&hash) {
                // Parameters and salt come from the stored hash, so older costs keep verifying.
                Ok(parsed) => verify_in(&parsed, &password, &mut memory),
                Err(e) => {
                    tracing::error!(error = %e, "a stored password hash does not parse");
                    // Still spend the time, then refuse.
                    let _ =
                        PasswordHash::new(&dummy).map(|d| verify_in(&d, &password, &mut memory));
                    false
                }
            };
            pool.give_back(memory);
            matched
        })
        .await?;
        Ok(known && matched)
    }
}

/// Memory for verifications, kept between them: at most one buffer per hashing slot (a buffer
/// is taken and given back while the slot's permit is held), each as large as the costliest
/// hash it served. Without it every verification allocates and frees its 19 MiB, and the
/// allocator keeps freed blocks in per-thread arenas, so resident memory grew with the number
/// of blocking threads that ever hashed rather than with the slots.
#[derive(Default)]
struct MemoryPool(Mutex<Vec<Vec<Block>>>);

impl MemoryPool {
    fn take(&self) -> Vec<Block> {
        let mut buffers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buffers.pop().unwrap_or_default()
    }

    fn give_back(&self, memory: Vec<Block>) {
        let mut buffers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buffers.push(memory);
    }
}

/// Whether `password` matches the PHC `hash`, computed in `memory` (grown to the hash's memory
/// cost when it is smaller). The outputs are compared in constant time.
fn verify_in(hash: &PasswordHash<'_>, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let (Ok(params), Some(expected), Some(salt)) = (Params::try_from(hash), hash.hash, hash.salt)
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..])
        .is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, HashingError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashingError::Failed(e.to_string()))?;
    argon2
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashingError::Failed(e.to_string()))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashingError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HashingError::Failed(format!("hashing task failed: {e}")))
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

    #[tokio::test]
    async fn verification_reuses_one_buffer_per_slot_and_follows_the_stored_costs() {
        let costly = Passwords::new(&IdentitySettings {
            password_hash_memory_kib: 256,
            ..cheap()
        })
        .await
        .unwrap();
        let older = costly.hash("correct horse").await.unwrap();
        let passwords = Passwords::new(&IdentitySettings {
            max_concurrent_password_hashes: 2,
            ..cheap()
        })
        .await
        .unwrap();
        let checks = (0..8).map(|i| {
            let (passwords, older) = (passwords.clone(), older.clone());
            async move {
                let password = if i % 2 == 0 { "correct horse" } else { "wrong" };
                passwords.verify(password, Some(&older)).await.unwrap()
            }
        });
        let results = futures_util::future::join_all(checks).await;
        assert_eq!(
            results,
            [true, false, true, false, true, false, true, false]
        );
        let buffers = passwords.memory.0.lock().unwrap();
        assert!((1..=2).contains(&buffers.len()), "{}", buffers.len());
        assert!(
            buffers.iter().all(|b| b.len() == 256),
            "grown to the stored cost"
        );
    }

    #[tokio::test]
    async fn hashing_waits_for_a_slot_then_reports_busy() {
        let passwords = Passwords::new(&IdentitySettings {
            max_concurrent_password_hashes: 1,
            password_hash_wait_ms: 50,
            ..cheap()
        })
        .await
        .unwrap();
        let held = passwords.slot().await.unwrap();
        assert!(matches!(passwords.hash("x").await, Err(HashingError::Busy)));
        drop(held);
        assert!(passwords.hash("correct horse").await.is_ok());
    }
}
