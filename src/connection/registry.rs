//! Every connection the server holds, by connection token, with a hard cap.

use super::Connection;
use dashmap::DashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The registry is at its configured maximum.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server holds its maximum number of connections")]
pub struct RegistryFull;

/// Connections by their secret token (the `id` of transport requests).
#[derive(Debug)]
pub struct ConnectionRegistry {
    by_token: DashMap<String, Arc<Connection>>,
    count: AtomicUsize,
    max: usize,
}

impl ConnectionRegistry {
    pub fn new(max: usize) -> Self {
        Self {
            by_token: DashMap::new(),
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// Registers a connection unless the cap is reached.
    pub fn insert(&self, connection: Arc<Connection>) -> Result<(), RegistryFull> {
        let reserved = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(RegistryFull);
        }
        if self
            .by_token
            .insert(connection.token.clone(), connection)
            .is_some()
        {
            // Tokens are 128-bit random: a collision replaced an entry and must not be counted.
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    pub fn get(&self, token: &str) -> Option<Arc<Connection>> {
        self.by_token.get(token).map(|c| c.clone())
    }

    pub fn remove(&self, token: &str) -> Option<Arc<Connection>> {
        let removed = self.by_token.remove(token).map(|(_, c)| c);
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every connection (shutdown, admin views). Not for hot paths.
    pub fn all(&self) -> Vec<Arc<Connection>> {
        self.by_token.iter().map(|e| e.value().clone()).collect()
    }
}
