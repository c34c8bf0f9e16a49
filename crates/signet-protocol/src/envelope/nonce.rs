//! Remembering used nonces so that a signed envelope is accepted once.
//!
//! A nonce only needs remembering until its envelope would be refused as expired anyway
//! (`expiry + clock skew`), which keeps the store small: at most one lifetime's worth of
//! commands. Each scope (a login session) may also hold only so many unexpired nonces, so one
//! sender at full speed exhausts its own quota long before the store is full for everyone.

use futures_util::future::BoxFuture;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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
/// refusing; a nonce costs about 100 bytes in the store, so the bound is about 100 MiB at worst.
pub const DEFAULT_NONCE_CAPACITY: u64 = 1_000_000;

/// Independent parts of the in-memory store, each behind its own lock: a scope's nonces all live
/// in one shard, so its replay check, quota and insert are one critical section, while different
/// sessions rarely meet on a lock.
const SHARDS: usize = 32;

/// Expiry granularity: records are dropped in whole buckets of this many milliseconds, so a
/// record outlives its expiry by less than this (it reads as absent from its expiry on).
const BUCKET_MS: u64 = 1_000;

/// A `(scope, nonce)` pair as the store remembers it: 128 bits of SipHash under this process's
/// random key, instead of the two strings (no allocation per insert, a fixed size per record).
/// The same pair always gives the same id, so a replay is always seen; two different pairs share
/// an id with probability 2^-128, which could only refuse an envelope (as a replay), never
/// accept one. The key is secret, so a sender cannot aim at another session's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct NonceId(u128);

/// A scope by a 64-bit keyed hash: it picks the shard and counts the scope's quota. Two scopes
/// sharing one (probability 2^-64 per pair) would share a quota, nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ScopeId(u64);

impl ScopeId {
    /// The shard this scope's records live in. Chosen by high bits: the maps inside hash by
    /// the low ones.
    fn shard_index(self) -> usize {
        (self.0 >> 40) as usize % SHARDS
    }
}

/// Hashes the ids above, already uniform keyed hashes, by taking their bits as they are.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached by the ids (they call the integer methods); correct for anything else.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    fn write_u128(&mut self, n: u128) {
        // Truncation intended: both halves are uniform; fold them.
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<PreHashed>>;

#[derive(Debug, Clone, Copy)]
struct Record {
    expires_at_ms: u64,
    scope: ScopeId,
}

/// The bucket a record expiring at `expires_at_ms` is dropped with: it starts after the expiry.
fn bucket_of(expires_at_ms: u64) -> u64 {
    expires_at_ms / BUCKET_MS + 1
}

#[derive(Default)]
struct Shard {
    records: IdMap<NonceId, Record>,
    /// Ids by the bucket they are dropped with. A record renewed after its expiry (its nonce may
    /// then be used again) is listed twice; its old listing finds it unexpired and leaves it.
    expiring: BTreeMap<u64, Vec<NonceId>>,
    /// Unexpired records per scope (scopes with none are absent).
    per_scope: IdMap<ScopeId, u64>,
}

impl Shard {
    /// Drops the records of every bucket that started by `now_ms`; returns how many.
    fn purge(&mut self, now_ms: u64) -> u64 {
        let mut dropped = 0;
        while let Some(bucket) = self.expiring.first_entry() {
            if bucket.key().saturating_mul(BUCKET_MS) > now_ms {
                break;
            }
            for id in bucket.remove() {
                if let Entry::Occupied(record) = self.records.entry(id) {
                    if record.get().expires_at_ms < now_ms {
                        let scope = record.remove().scope;
                        release_scope(&mut self.per_scope, scope);
                        dropped += 1;
                    }
                }
            }
        }
        // A burst leaves the maps at their peak size; give most of it back once it has passed.
        if self.records.capacity() > 4 * self.records.len().max(1024) {
            self.records.shrink_to(2 * self.records.len());
        }
        dropped
    }
}

fn release_scope(per_scope: &mut IdMap<ScopeId, u64>, scope: ScopeId) {
    if let Entry::Occupied(mut count) = per_scope.entry(scope) {
        *count.get_mut() = count.get().saturating_sub(1);
        if *count.get() == 0 {
            count.remove();
        }
    }
}

/// A per-process nonce store: a sharded hash map of keyed-hash ids, each record dropped in a
/// coarse expiry bucket by the inserts that follow it. An insert costs well under a microsecond
/// (`cargo bench -- nonce`).
///
/// When full it refuses new nonces rather than evicting old ones: an evicted nonce that has not
/// expired could be replayed. An exact count of live records across the shards bounds the store;
/// an exact count per scope, kept in the scope's shard, enforces the per-scope quota.
pub struct InMemoryNonceStore {
    shards: Box<[Mutex<Shard>]>,
    /// The key of the ids: random per process.
    keys: RandomState,
    live: AtomicU64,
    capacity: u64,
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
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            keys: RandomState::new(),
            live: AtomicU64::new(0),
            capacity,
            scope_quota: u64::MAX,
        }
    }

    /// Limits each scope to `quota` unexpired nonces; beyond it that scope's new nonces are
    /// refused with [`NonceStoreError::ScopeFull`].
    pub fn with_scope_quota(mut self, quota: u64) -> Self {
        self.scope_quota = quota;
        self
    }

    /// Unexpired nonces `scope` holds (exact, except that expired ones count until their bucket
    /// is dropped, less than a second later).
    pub fn scope_count(&self, scope: &str) -> u64 {
        let scope = self.scope_id(scope);
        self.shard(scope)
            .per_scope
            .get(&scope)
            .copied()
            .unwrap_or(0)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Nonces held, the ones of buckets not yet dropped included.
    pub fn len(&self) -> u64 {
        self.live.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired bucket of every shard now, instead of at the shard's next insert.
    pub fn purge_expired(&self) {
        self.purge_all(unix_now_ms());
    }

    /// The synchronous core of [`NonceStore::insert_if_absent`].
    pub fn insert_if_absent_now(
        &self,
        scope: &str,
        nonce: &str,
        expires_at_ms: u64,
    ) -> Result<bool, NonceStoreError> {
        self.insert_at(scope, nonce, expires_at_ms, unix_now_ms())
    }

    /// [`Self::insert_if_absent_now`] at the Unix time `now_ms`.
    fn insert_at(
        &self,
        scope: &str,
        nonce: &str,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<bool, NonceStoreError> {
        let scope_id = self.scope_id(scope);
        let id = self.nonce_id(scope, nonce);
        let inserted = self.insert_locked(
            &mut self.shard(scope_id),
            id,
            scope_id,
            expires_at_ms,
            now_ms,
        );
        match inserted {
            Err(NonceStoreError::Full { .. }) => {
                // Other shards may hold expired records that no insert of theirs has dropped
                // yet: drop them, then try once more before refusing.
                self.purge_all(now_ms);
                self.insert_locked(
                    &mut self.shard(scope_id),
                    id,
                    scope_id,
                    expires_at_ms,
                    now_ms,
                )
            }
            other => other,
        }
    }

    /// The replay check, the quota, the capacity and the insert, under the scope's shard lock:
    /// of concurrent inserts of one nonce exactly one sees `true`.
    fn insert_locked(
        &self,
        shard: &mut Shard,
        id: NonceId,
        scope: ScopeId,
        expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<bool, NonceStoreError> {
        let dropped = shard.purge(now_ms);
        self.live.fetch_sub(dropped, Ordering::AcqRel);
        match shard.records.entry(id) {
            // A replay is answered as one even when the store is full.
            Entry::Occupied(record) if record.get().expires_at_ms >= now_ms => return Ok(false),
            // Expired, its bucket not dropped yet: the nonce may be used again, in the same slot.
            Entry::Occupied(mut record) => record.get_mut().expires_at_ms = expires_at_ms,
            Entry::Vacant(vacant) => {
                // The scope's quota first: a scope at its quota takes nothing from the capacity.
                let held = shard.per_scope.get(&scope).copied().unwrap_or(0);
                if held >= self.scope_quota {
                    return Err(NonceStoreError::ScopeFull {
                        quota: self.scope_quota,
                    });
                }
                if !self.reserve_slot() {
                    return Err(NonceStoreError::Full {
                        capacity: self.capacity,
                    });
                }
                vacant.insert(Record {
                    expires_at_ms,
                    scope,
                });
                *shard.per_scope.entry(scope).or_insert(0) += 1;
            }
        }
        shard
            .expiring
            .entry(bucket_of(expires_at_ms))
            .or_default()
            .push(id);
        Ok(true)
    }

    fn reserve_slot(&self) -> bool {
        let capacity = self.capacity;
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn purge_all(&self, now_ms: u64) {
        for shard in self.shards.iter() {
            let dropped = lock(shard).purge(now_ms);
            self.live.fetch_sub(dropped, Ordering::AcqRel);
        }
    }

    fn scope_id(&self, scope: &str) -> ScopeId {
        ScopeId(self.keys.hash_one((0u8, scope)))
    }

    /// Two SipHash outputs under one key, told apart by their first input byte.
    fn nonce_id(&self, scope: &str, nonce: &str) -> NonceId {
        let low = self.keys.hash_one((1u8, scope, nonce));
        let high = self.keys.hash_one((2u8, scope, nonce));
        NonceId(u128::from(high) << 64 | u128::from(low))
    }

    /// The shard of `scope`.
    fn shard(&self, scope: ScopeId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[scope.shard_index()])
    }
}

/// A shard's lock. No step leaves a shard inconsistent midway, so a panic elsewhere while it
/// was held (an allocation failure) does not make it unusable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NonceStore for InMemoryNonceStore {
    fn insert_if_absent<'a>(
        &'a self,
        scope: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
    ) -> BoxFuture<'a, Result<bool, NonceStoreError>> {
        // No await inside: the work is a few hash-map operations on the calling thread.
        Box::pin(std::future::ready(self.insert_if_absent_now(
            scope,
            nonce,
            expires_at_ms,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn in_ms(ms: u64) -> u64 {
        unix_now_ms() + ms
    }

    /// A fixed clock for the tests that step through expiry: a whole bucket, so which bucket a
    /// time falls in is plain to see.
    const T: u64 = 1_800_000_000_000;

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
        // On the real clock: a nonce whose record has expired reads as absent at once.
        assert!(store
            .insert_if_absent_now("s", "old", unix_now_ms() - 1)
            .unwrap());
        assert!(store
            .insert_if_absent_now("s", "old", in_ms(60_000))
            .unwrap());
        assert!(!store
            .insert_if_absent_now("s", "old", in_ms(60_000))
            .unwrap());
        // Stepping the clock: remembered through its expiry, forgotten right after.
        assert!(store.insert_at("s", "short", T + 100, T).unwrap());
        assert!(!store.insert_at("s", "short", T + 100, T + 100).unwrap());
        assert!(store.insert_at("s", "short", T + 5_000, T + 101).unwrap());
        assert!(!store.insert_at("s", "short", T + 5_000, T + 102).unwrap());
    }

    #[test]
    fn a_renewed_nonce_outlives_its_first_record_s_bucket() {
        let store = InMemoryNonceStore::new(10);
        assert!(store.insert_at("s", "n", T + 10, T).unwrap());
        // Expired, its bucket (dropped at T + 1000) still there: used again, until T + 5000.
        assert!(store.insert_at("s", "n", T + 5_000, T + 20).unwrap());
        // The first record's bucket goes; the renewed record stays and still refuses a replay.
        assert!(!store.insert_at("s", "n", T + 5_000, T + 1_000).unwrap());
        assert!(!store.insert_at("s", "n", T + 5_000, T + 4_999).unwrap());
        assert_eq!(store.len(), 1);
        assert_eq!(store.scope_count("s"), 1);
        assert!(store.insert_at("s", "other", T + 9_000, T + 6_000).unwrap());
        assert_eq!(
            store.len(),
            1,
            "the renewed record went with its own bucket"
        );
    }

    #[test]
    fn is_bounded_and_refuses_rather_than_evicts() {
        let capacity = 50;
        let store = InMemoryNonceStore::new(capacity);
        let until = in_ms(60_000);
        let mut refused = 0;
        for i in 0..capacity * 3 {
            // Many scopes, so the bound holds across shards.
            match store.insert_if_absent_now(&format!("s{}", i % 7), &format!("nonce-{i}"), until) {
                Ok(fresh) => assert!(fresh),
                Err(NonceStoreError::Full { capacity: c }) => {
                    assert_eq!(c, capacity);
                    refused += 1;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(store.len(), capacity);
        assert_eq!(refused, capacity * 2);
        // Every accepted nonce is still remembered: none was evicted to make room.
        for i in 0..capacity {
            assert!(!store
                .insert_if_absent_now(&format!("s{}", i % 7), &format!("nonce-{i}"), until)
                .unwrap());
        }
    }

    #[test]
    fn expired_entries_free_their_slots() {
        let store = InMemoryNonceStore::new(5);
        for i in 0..5 {
            assert!(store.insert_at("s", &format!("n{i}"), T + 20, T).unwrap());
        }
        assert!(matches!(
            store.insert_at("s", "more", T + 60_000, T + 10),
            Err(NonceStoreError::Full { .. })
        ));
        // Expired but in a bucket not yet dropped: still holding the slots.
        assert!(matches!(
            store.insert_at("s", "more", T + 60_000, T + 500),
            Err(NonceStoreError::Full { .. })
        ));
        // Their bucket is dropped once it has started.
        assert!(store.insert_at("s", "more", T + 60_000, T + 1_000).unwrap());
        assert_eq!(store.len(), 1);
        for name in ["n0", "x", "y", "z"] {
            assert!(store.insert_at("s", name, T + 60_000, T + 1_001).unwrap());
        }
        assert_eq!(store.len(), 5);
        assert!(matches!(
            store.insert_at("s", "full", T + 60_000, T + 1_002),
            Err(NonceStoreError::Full { .. })
        ));
    }

    /// Two scopes whose nonces live in different shards.
    fn scopes_in_two_shards(store: &InMemoryNonceStore) -> (String, String) {
        let shard = |scope: &str| store.scope_id(scope).shard_index();
        let first = "scope-0".to_string();
        let second = (1..)
            .map(|i| format!("scope-{i}"))
            .find(|s| shard(s) != shard(&first))
            .unwrap();
        (first, second)
    }

    #[test]
    fn a_full_store_drops_expired_records_of_other_shards_before_refusing() {
        let store = InMemoryNonceStore::new(4);
        let (a, b) = scopes_in_two_shards(&store);
        for i in 0..4 {
            assert!(store.insert_at(&a, &format!("n{i}"), T + 20, T).unwrap());
        }
        // b's shard holds nothing to drop; a's expired records are dropped for it.
        assert!(store.insert_at(&b, "n", T + 60_000, T + 2_000).unwrap());
        assert_eq!(store.len(), 1);
        assert_eq!(store.scope_count(&a), 0);
    }

    #[test]
    fn replays_are_refused_across_every_shard() {
        let store = InMemoryNonceStore::new(100_000);
        let until = in_ms(60_000);
        // The shard of a scope depends on the store's random keys: take scopes until every
        // shard has some (a fixed count leaves one empty now and then: ~6% for 200 scopes).
        let mut scopes: Vec<String> = Vec::new();
        let mut shards = std::collections::HashSet::new();
        while shards.len() < SHARDS {
            assert!(
                scopes.len() < 100_000,
                "the scopes never spread over every shard"
            );
            let scope = format!("session-{}", scopes.len());
            shards.insert(store.scope_id(&scope).shard_index());
            scopes.push(scope);
        }
        for scope in &scopes {
            for n in 0..25 {
                assert!(store
                    .insert_if_absent_now(scope, &format!("n{n}"), until)
                    .unwrap());
            }
        }
        for scope in &scopes {
            for n in 0..25 {
                assert!(!store
                    .insert_if_absent_now(scope, &format!("n{n}"), until)
                    .unwrap());
            }
            assert_eq!(store.scope_count(scope), 25);
        }
        assert_eq!(store.len(), scopes.len() as u64 * 25);
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
        assert_eq!(store.len(), 4);
    }

    #[test]
    fn expired_nonces_give_their_scope_slots_back() {
        let store = InMemoryNonceStore::new(100).with_scope_quota(2);
        assert!(store.insert_at("s", "a", T + 20, T).unwrap());
        assert!(store.insert_at("s", "b", T + 20, T).unwrap());
        assert!(matches!(
            store.insert_at("s", "c", T + 60_000, T + 30),
            Err(NonceStoreError::ScopeFull { .. })
        ));
        assert!(store.insert_at("s", "c", T + 60_000, T + 1_000).unwrap());
        assert_eq!(store.scope_count("s"), 1);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn purge_expired_drops_every_shard_s_expired_buckets() {
        let store = InMemoryNonceStore::new(100);
        for i in 0..40 {
            let until = unix_now_ms() - 2 * BUCKET_MS;
            assert!(store
                .insert_at(&format!("s{i}"), "n", until, until - 10)
                .unwrap());
        }
        assert_eq!(store.len(), 40);
        store.purge_expired();
        assert!(store.is_empty());
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
    fn concurrent_inserts_across_shards_never_pass_the_capacity() {
        let capacity = 1_000;
        let store = Arc::new(InMemoryNonceStore::new(capacity));
        let until = in_ms(60_000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|i| {
                            let scope = format!("s{}", i % 50);
                            match store.insert_if_absent_now(&scope, &format!("{t}-{i}"), until) {
                                Ok(fresh) => fresh,
                                Err(NonceStoreError::Full { .. }) => false,
                                Err(other) => panic!("unexpected {other}"),
                            }
                        })
                        .count() as u64
                })
            })
            .collect();
        let accepted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(accepted, capacity);
        assert_eq!(store.len(), capacity);
    }

    #[test]
    fn is_object_safe() {
        let store: Arc<dyn NonceStore> = Arc::new(InMemoryNonceStore::default());
        assert_eq!(Arc::strong_count(&store), 1);
    }
}
