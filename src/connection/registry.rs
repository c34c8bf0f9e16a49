//! Every connection the server holds, by connection token, with a hard cap overall and one per
//! principal, and indexes by the token claims revocation names (`jti`, `sid`, `sub`), so revoking
//! closes exactly the affected connections without scanning them all.

use super::{CloseReason, Connection, RefreshError};
use crate::auth::Principal;
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryFull {
    /// The server holds its maximum number of connections.
    #[error("the server holds its maximum number of connections")]
    Server,
    /// The connection's principal holds its own maximum; other principals are unaffected.
    #[error("the principal holds its maximum number of connections")]
    Principal,
}

/// Which connections a revocation or kick names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim<'a> {
    /// The access token's `jti`.
    TokenId(&'a str),
    /// The login session (`sid`).
    Session(&'a str),
    /// The principal (`sub`): every connection of a user or device.
    Subject(&'a str),
    /// The owner of device tokens (`owner`): every connection of a user's devices.
    Owner(&'a str),
}

type Index = DashMap<String, HashSet<String>>;

/// Connections by their secret token (the `id` of transport requests).
#[derive(Debug)]
pub struct ConnectionRegistry {
    by_token: DashMap<String, Arc<Connection>>,
    by_jti: Index,
    by_sid: Index,
    by_sub: Index,
    by_owner: Index,
    count: AtomicUsize,
    max: usize,
    /// Connections one `sub` may hold; `by_sub` is the exact count.
    max_per_principal: usize,
}

fn index_add(index: &Index, key: Option<&str>, token: &str) {
    if let Some(key) = key {
        index
            .entry(key.to_string())
            .or_default()
            .insert(token.to_string());
    }
}

fn index_remove(index: &Index, key: Option<&str>, token: &str) {
    if let Some(key) = key {
        index.remove_if_mut(key, |_, tokens| {
            tokens.remove(token);
            tokens.is_empty()
        });
    }
}

impl ConnectionRegistry {
    pub fn new(max: usize, max_per_principal: usize) -> Self {
        Self {
            by_token: DashMap::new(),
            by_jti: DashMap::new(),
            by_sid: DashMap::new(),
            by_sub: DashMap::new(),
            by_owner: DashMap::new(),
            count: AtomicUsize::new(0),
            max,
            max_per_principal,
        }
    }

    /// Indexes the claims a refresh may change (`sub` never changes: it is indexed on insert).
    fn index_claims(&self, principal: &Principal, token: &str) {
        index_add(&self.by_jti, principal.jti.as_deref(), token);
        index_add(&self.by_sid, principal.sid.as_deref(), token);
        index_add(&self.by_owner, principal.owner.as_deref(), token);
    }

    fn unindex_claims(&self, principal: &Principal, token: &str) {
        index_remove(&self.by_jti, principal.jti.as_deref(), token);
        index_remove(&self.by_sid, principal.sid.as_deref(), token);
        index_remove(&self.by_owner, principal.owner.as_deref(), token);
    }

    /// Registers a connection unless the server's or its principal's cap is reached.
    pub fn insert(&self, connection: Arc<Connection>) -> Result<(), RegistryFull> {
        let reserved = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(RegistryFull::Server);
        }
        let principal = connection.principal();
        // The per-principal check and the insert happen under the entry's shard lock, so
        // concurrent negotiates of one principal cannot overshoot its cap.
        {
            let mut tokens = self.by_sub.entry(principal.sub.clone()).or_default();
            if tokens.len() >= self.max_per_principal {
                drop(tokens);
                // Drops the entry again if it was created empty just now.
                self.by_sub
                    .remove_if(&principal.sub, |_, tokens| tokens.is_empty());
                self.count.fetch_sub(1, Ordering::AcqRel);
                return Err(RegistryFull::Principal);
            }
            tokens.insert(connection.token.clone());
        }
        self.index_claims(&principal, &connection.token);
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
        if let Some(connection) = &removed {
            self.count.fetch_sub(1, Ordering::AcqRel);
            let principal = connection.principal();
            self.unindex_claims(&principal, token);
            index_remove(&self.by_sub, Some(&principal.sub), token);
        }
        removed
    }

    /// Moves a connection onto a new token of the same principal (in-band refresh): its expiry
    /// and roles become the new token's, and revocations of the new `jti`/`sid` reach it.
    /// Returns the new token's remaining lifetime in seconds.
    pub fn refresh(
        &self,
        connection: &Connection,
        principal: Principal,
        now: i64,
    ) -> Result<i64, RefreshError> {
        let current = connection.principal();
        if current.sub != principal.sub {
            return Err(RefreshError::UserMismatch);
        }
        if connection.is_closed() {
            return Err(RefreshError::Closed);
        }
        let lifetime = principal.expires_at.saturating_sub(now).max(0);
        // Same `sub`: its index entry (and the principal's connection count) stays as it is.
        self.unindex_claims(&current, &connection.token);
        self.index_claims(&principal, &connection.token);
        connection.set_principal(principal);
        Ok(lifetime)
    }

    /// The open connections the claim names, found through the index (no scan).
    pub fn matching(&self, claim: Claim<'_>) -> Vec<Arc<Connection>> {
        let (index, key) = match claim {
            Claim::TokenId(k) => (&self.by_jti, k),
            Claim::Session(k) => (&self.by_sid, k),
            Claim::Subject(k) => (&self.by_sub, k),
            Claim::Owner(k) => (&self.by_owner, k),
        };
        let tokens: Vec<String> = index
            .get(key)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        tokens
            .iter()
            .filter_map(|token| self.get(token))
            .filter(|c| !c.is_closed())
            .collect()
    }

    /// Closes every connection the claim names; returns how many.
    pub fn close_matching(&self, claim: Claim<'_>, reason: &CloseReason) -> usize {
        let matching = self.matching(claim);
        for connection in &matching {
            connection.close(reason.clone());
        }
        matching.len()
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
