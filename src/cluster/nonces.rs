//! Replay protection every node shares: a nonce is recorded in Redis with `SET key 1 NX PX`
//! for the rest of its envelope's validity, so an envelope accepted on one node is
//! `replayed_nonce` on every other.
//!
//! It fails closed: while Redis cannot answer, [`NonceStoreError::Unavailable`] refuses the
//! envelope (`replay_check_unavailable`), since accepting it unrecorded would let it be
//! replayed elsewhere. The verifier asks only after the signature holds, so a forged envelope
//! never burns a nonce here either.

use super::Cluster;
use crate::envelope::{NonceStore, NonceStoreError};
use futures_util::future::BoxFuture;
use std::sync::Arc;

pub struct RedisNonceStore {
    cluster: Arc<Cluster>,
}

impl RedisNonceStore {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// The key of `nonce` in `scope`; the scope's length keeps `a:b` + `c` apart from `a` +
    /// `b:c`.
    fn key(&self, scope: &str, nonce: &str) -> String {
        self.cluster
            .key(&format!("nonce:{}:{scope}:{nonce}", scope.len()))
    }
}

impl NonceStore for RedisNonceStore {
    fn insert_if_absent<'a>(
        &'a self,
        scope: &'a str,
        nonce: &'a str,
        expires_at_ms: u64,
    ) -> BoxFuture<'a, Result<bool, NonceStoreError>> {
        Box::pin(async move {
            let now = crate::envelope::unix_now_ms();
            // A relative expiry, so Redis's clock need not agree with ours.
            let remaining = expires_at_ms.saturating_sub(now).max(1);
            let mut commands = self.cluster.commands();
            let set: Option<String> = redis::cmd("SET")
                .arg(self.key(scope, nonce))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(remaining)
                .query_async(&mut commands)
                .await
                .map_err(|e| NonceStoreError::Unavailable(Box::new(e)))?;
            Ok(set.is_some())
        })
    }
}
