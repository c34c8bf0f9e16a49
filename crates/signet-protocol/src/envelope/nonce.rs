//! Remembering used nonces so that a signed envelope is accepted once.
//!
//! A nonce only needs remembering until its envelope would be refused as expired anyway
//! (`expiry + clock skew`), which keeps the store small: at most one lifetime's worth of
//! commands. Each scope (a login session) may also hold only so many unexpired nonces, so one
//! sender at full speed exhausts its own quota long before the store is full for everyone.

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::{Equivalent, Expiry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::unix_now_ms;

/// Why a nonce could not be recorded. The verifier refuses the envelope in every case: a nonce
/// that may not have been recorded may be replayed.
#[derive(Debug, thiserror::Error)]
pub enum NonceStoreError {
    #[error("nonce store is full ({capacity} unexpired nonces)")]
    Full { capacity: u64 },
    /// This scope holds its quota of unexpired nonces; other scopes are unaffected.
    #[error("nonce quota of the scope is used up ({quota} unexpired nonces)")]
    ScopeFull { quota: u64 },
    #[error("nonce store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where used nonces are kept. Object-safe so the in-memory store can be swapped for a shared one
/// (Redis `SET key 1 NX PXAT expires_at`) when several servers must see each other's nonces.
pub trait NonceStore: Send + Sync {
    /// Records `nonce` under `scope` until `expires_at_ms` (Unix ms) unless it is already there.
    ///
    /// Returns `Ok(true)` if it was absent (first use) and `Ok(false)` if it was present (replay).
    /// Must be atomic: of two concurrent calls with the same scope and nonce exactly one sees
    /// `true`.
    fn insert_if_absent<'a>(
        &'a self,
        scope: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
    ) -> BoxFuture<'a, Result<bool, NonceStoreError>>;
}

/// Default bound on unexpired nonces in [`InMemoryNonceStore`]. With the default 60 s lifetime and
/// 5 s skew this allows about 15,000 signed commands per second across the server before it starts
/// refusing; an entry costs a few hundred bytes, so the bound is a few hundred MiB at worst.
pub const DEFAULT_NONCE_CAPACITY: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct NonceKey {
    scope: Box<str>,
    nonce: Box<str>,
}

/// Looks up a [`NonceKey`] without allocating one. Its derived `Hash` matches `NonceKey`'s
/// because `Box<str>` and `&str` both hash as `str`.
#[derive(Hash)]
struct NonceKeyRef<'a> {
    scope: &'a str,
    nonce: &'a str,
}

impl Equivalent<NonceKey> for NonceKeyRef<'_> {
    fn equivalent(&self, key: &NonceKey) -> bool {
        *self.scope == *key.scope && *self.nonce == *key.nonce
    }
}

/// A per-process nonce store on a moka cache, each entry expiring at its own time.
///
/// When full it refuses new nonces rather than evicting old ones: an evicted nonce that has not
/// expired could be replayed, and moka's admission policy may also silently drop a new entry
/// when the cache is at capacity. A count of live entries, reserved before each insert and
/// released by moka's removal listener, keeps the cache below its capacity so neither happens.
/// An exact count per scope, kept the same way, enforces the per-scope quota.
pub struct InMemoryNonceStore {
    entries: Cache<NonceKey, u64>,
    live: Arc<AtomicU64>,
    capacity: u64,
    /// Unexpired nonces per scope (scopes with none are absent).
    per_scope: Arc<DashMap<Box<str>, u64>>,
    scope_quota: u64,
}

impl std::fmt::Debug for InMemoryNonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryNonceStore")
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .field("scope_quota", &self.scope_quota)
            .finish()
    }
}

impl Default for InMemoryNonceStore {
    /// Holds up to [`DEFAULT_NONCE_CAPACITY`] unexpired nonces.
    fn default() -> Self {
        Self::new(DEFAULT_NONCE_CAPACITY)
    }
}

impl InMemoryNonceStore {
    /// A store of `capacity` nonces, with no quota per scope (see [`Self::with_scope_quota`]).
    pub fn new(capacity: u64) -> Self {
        let live = Arc::new(AtomicU64::new(0));
        let released = Arc::clone(&live);
        let per_scope: Arc<DashMap<Box<str>, u64>> = Arc::new(DashMap::new());
        let scope_released = Arc::clone(&per_scope);
        let entries = Cache::builder()
            // A backstop only: the live count keeps the cache from reaching it.
            .max_capacity(capacity)
            .expire_after(ExpireAtOwnTime)
            .eviction_listener(move |key: Arc<NonceKey>, _value, _cause: RemovalCause| {
                // Every removal (expired, replaced after expiry, or evicted) frees a slot.
                let _ = released.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
                release_scope(&scope_released, &key.scope);
            })
            .build();
        Self {
            entries,
            live,
            capacity,
            per_scope,
            scope_quota: u64::MAX,
        }
    }

    /// Limits each scope to `quota` unexpired nonces; beyond it that scope's new nonces are
    /// refused with [`NonceStoreError::ScopeFull`].
    pub fn with_scope_quota(mut self, quota: u64) -> Self {
        self.scope_quota = quota;
        self
    }

    /// Unexpired nonces `scope` holds (exact, unlike [`Self::entry_count`]).
    pub fn scope_count(&self, scope: &str) -> u64 {
        self.per_scope.get(scope).map_or(0, |n| *n)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Entries moka currently holds; approximate until [`Self::run_pending_tasks`].
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Applies pending inserts and drops expired entries now instead of on moka's schedule.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }

    /// The synchronous core of [`NonceStore::insert_if_absent`].
    pub fn insert_if_absent_now(
        &self,
        scope: &str,
        nonce: &str,
        expires_at_ms: u64,
    ) -> Result<bool, NonceStoreError> {
        // A replay is answered as one even when the store is full. Expired entries read as
        // absent, so this never mistakes an old nonce for a live one.
        if self.entries.contains_key(&NonceKeyRef { scope, nonce }) {
            return Ok(false);
        }
        // The scope's quota first: a scope at its quota takes nothing from the shared capacity.
        if !self.reserve_scope_slot(scope) {
            self.entries.run_pending_tasks();
            if !self.reserve_scope_slot(scope) {
                return Err(NonceStoreError::ScopeFull {
                    quota: self.scope_quota,
                });
            }
        }
        if !self.reserve_slot() {
            // Expired entries hold their slots until moka's housekeeping removes them, which its
            // timer wheel does about a second after expiry; run it once before refusing.
            self.entries.run_pending_tasks();
            if !self.reserve_slot() {
                release_scope(&self.per_scope, scope);
                return Err(NonceStoreError::Full {
                    capacity: self.capacity,
                });
            }
        }
        let key = NonceKey {
            scope: scope.into(),
            nonce: nonce.into(),
        };
        // entry().or_insert_with is atomic per key: of concurrent callers exactly one runs the
        // initialiser and sees a fresh entry.
        let entry = self.entries.entry(key).or_insert_with(|| expires_at_ms);
        if entry.is_fresh() {
            Ok(true)
        } else {
            self.release_slot();
            release_scope(&self.per_scope, scope);
            Ok(false)
        }
    }

    fn reserve_scope_slot(&self, scope: &str) -> bool {
        // The entry holds its shard's lock: check and increment are one step.
        let mut count = self.per_scope.entry(scope.into()).or_insert(0);
        if *count >= self.scope_quota {
            return false;
        }
        *count += 1;
        true
    }

    fn reserve_slot(&self) -> bool {
        let capacity = self.capacity;
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn release_slot(&self) {
        let _ = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

impl NonceStore for InMemoryNonceStore {
    fn insert_if_absent<'a>(
        &'a self,
        scope: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
    ) -> BoxFuture<'a, Result<bool, NonceStoreError>> {
        // No await inside: moka's sync cache does its work on the calling thread in microseconds.
        Box::pin(std::future::ready(self.insert_if_absent_now(
            scope,
            nonce,
            expires_at_ms,
        )))
    }
}

/// Gives back one of `scope`'s slots, forgetting the scope when it holds none.
fn release_scope(per_scope: &DashMap<Box<str>, u64>, scope: &str) {
    per_scope.remove_if_mut(scope, |_, count| {
        *count = count.saturating_sub(1);
        *count == 0
    });
}

/// Expires each entry at the Unix time stored as its value.
struct ExpireAtOwnTime;

impl Expiry<NonceKey, u64> for ExpireAtOwnTime {
    fn expire_after_create(
        &self,
        _key: &NonceKey,
        expires_at_ms: &u64,
        _created_at: Instant,
    ) -> Option<Duration> {
        let remaining = expires_at_ms.saturating_sub(unix_now_ms());
        Some(Duration::from_millis(remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_ms(ms: u64) -> u64 {
        unix_now_ms() + ms
    }

    #[tokio::test]
    async fn detects_replay() {
        let store = InMemoryNonceStore::new(10);
        let until = in_ms(60_000);
        assert!(store.insert_if_absent("s", "n", until).await.unwrap());
        assert!(!store.insert_if_absent("s", "n", until).await.unwrap());
    }

    #[tokio::test]
    async fn scopes_are_independent() {
        let store = InMemoryNonceStore::new(10);
        let until = in_ms(60_000);
        assert!(store
            .insert_if_absent("session-a", "n", until)
            .await
            .unwrap());
        assert!(store
            .insert_if_absent("session-b", "n", until)
            .await
            .unwrap());
        assert!(!store
            .insert_if_absent("session-a", "n", until)
            .await
            .unwrap());
    }

    #[test]
    fn forgets_after_expiry() {
        let store = InMemoryNonceStore::new(10);
        assert!(store
            .insert_if_absent_now("s", "short", in_ms(100))
            .unwrap());
        assert!(store
            .insert_if_absent_now("s", "long", in_ms(60_000))
            .unwrap());
        std::thread::sleep(Duration::from_millis(250));
        assert!(store
            .insert_if_absent_now("s", "short", in_ms(100))
            .unwrap());
        assert!(!store
            .insert_if_absent_now("s", "long", in_ms(60_000))
            .unwrap());
    }

    #[test]
    fn is_bounded_and_refuses_rather_than_evicts() {
        let capacity = 50;
        let store = InMemoryNonceStore::new(capacity);
        let until = in_ms(60_000);
        let mut refused = 0;
        for i in 0..capacity * 3 {
            match store.insert_if_absent_now("s", &format!("nonce-{i}"), until) {
                Ok(fresh) => assert!(fresh),
                Err(NonceStoreError::Full { capacity: c }) => {
                    assert_eq!(c, capacity);
                    refused += 1;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        store.run_pending_tasks();
        assert!(store.entry_count() <= capacity);
        assert_eq!(refused, capacity * 2);
        // Every accepted nonce is still remembered: none was evicted to make room.
        for i in 0..capacity {
            assert!(!store
                .insert_if_absent_now("s", &format!("nonce-{i}"), until)
                .unwrap());
        }
    }

    #[test]
    fn expired_entries_free_their_slots() {
        let store = InMemoryNonceStore::new(5);
        for i in 0..5 {
            assert!(store
                .insert_if_absent_now("s", &format!("n{i}"), in_ms(20))
                .unwrap());
        }
        assert!(matches!(
            store.insert_if_absent_now("s", "more", in_ms(60_000)),
            Err(NonceStoreError::Full { .. })
        ));
        // Slots come back when moka's timer wheel (about 1 s per tick) removes the expired
        // entries; poll rather than sleep a fixed time to keep the test short.
        let deadline = Instant::now() + Duration::from_millis(1_800);
        loop {
            match store.insert_if_absent_now("s", "more", in_ms(60_000)) {
                Ok(fresh) => {
                    assert!(fresh);
                    break;
                }
                Err(NonceStoreError::Full { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(other) => panic!("slots not freed: {other}"),
            }
        }
        // One reuses an expired key, three are new keys; with "more" that fills the store again.
        for name in ["n0", "x", "y", "z"] {
            assert!(store
                .insert_if_absent_now("s", name, in_ms(60_000))
                .unwrap());
        }
        store.run_pending_tasks();
        assert_eq!(store.live.load(Ordering::Acquire), 5);
        assert!(store.entry_count() <= 5);
    }

    #[test]
    fn a_scope_at_its_quota_is_refused_and_others_are_not() {
        let store = InMemoryNonceStore::new(100).with_scope_quota(3);
        let until = in_ms(60_000);
        for i in 0..3 {
            assert!(store
                .insert_if_absent_now("greedy", &format!("n{i}"), until)
                .unwrap());
        }
        assert!(matches!(
            store.insert_if_absent_now("greedy", "n3", until),
            Err(NonceStoreError::ScopeFull { quota: 3 })
        ));
        // A replay is still recognised as one, and other scopes keep working.
        assert!(!store.insert_if_absent_now("greedy", "n0", until).unwrap());
        assert!(store.insert_if_absent_now("other", "n3", until).unwrap());
        assert_eq!(store.scope_count("greedy"), 3);
        assert_eq!(store.scope_count("other"), 1);
        // The refused attempts took nothing from the shared capacity.
        assert_eq!(store.live.load(Ordering::Acquire), 4);
    }

    #[test]
    fn expired_nonces_give_their_scope_slots_back() {
        let store = InMemoryNonceStore::new(100).with_scope_quota(2);
        assert!(store.insert_if_absent_now("s", "a", in_ms(20)).unwrap());
        assert!(store.insert_if_absent_now("s", "b", in_ms(20)).unwrap());
        let deadline = Instant::now() + Duration::from_millis(1_800);
        loop {
            match store.insert_if_absent_now("s", "c", in_ms(60_000)) {
                Ok(fresh) => {
                    assert!(fresh);
                    break;
                }
                Err(NonceStoreError::ScopeFull { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(other) => panic!("scope slots not freed: {other}"),
            }
        }
        store.run_pending_tasks();
        assert_eq!(store.scope_count("s"), 1);
    }

    #[test]
    fn replay_does_not_hold_a_slot() {
        let store = InMemoryNonceStore::new(2);
        let until = in_ms(60_000);
        assert!(store.insert_if_absent_now("s", "a", until).unwrap());
        for _ in 0..10 {
            assert!(!store.insert_if_absent_now("s", "a", until).unwrap());
        }
        assert!(store.insert_if_absent_now("s", "b", until).unwrap());
    }

    #[test]
    fn concurrent_inserts_of_one_nonce_admit_exactly_one() {
        let store = Arc::new(InMemoryNonceStore::new(100));
        let until = in_ms(60_000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || store.insert_if_absent_now("s", "same", until).unwrap())
            })
            .collect();
        let fresh = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|fresh| *fresh)
            .count();
        assert_eq!(fresh, 1);
    }

    #[test]
    fn is_object_safe() {
        let store: Arc<dyn NonceStore> = Arc::new(InMemoryNonceStore::default());
        assert_eq!(Arc::strong_count(&store), 1);
    }
}
