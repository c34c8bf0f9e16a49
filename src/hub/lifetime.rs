//! The lifetime manager: who is connected to a hub, and every send to other connections.
//!
//! The trait is what a Redis backplane will implement; [`InProcessLifetimeManager`] serves one
//! node. Sends encode a message once per protocol ([`SerializedHubMessage`]) and hand the shared
//! bytes to each recipient with [`Connection::try_send`], so a broadcast never waits for a slow
//! client and never holds a lock across an `.await`.

use crate::connection::Connection;
use crate::protocol::SerializedHubMessage;
use async_trait::async_trait;
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    #[error("connection {0} is not connected to this hub")]
    UnknownConnection(String),
    #[error("a connection may belong to at most {0} groups")]
    TooManyGroups(usize),
    #[error("the backplane is unavailable: {0}")]
    Backplane(String),
}

/// Membership and sends for one hub. Every send returns how many connections it reached.
#[async_trait]
pub trait HubLifetimeManager: Send + Sync {
    /// A connection completed its handshake.
    async fn add_connection(&self, connection: Arc<Connection>) -> Result<(), LifetimeError>;
    /// A connection ended; it leaves every group.
    async fn remove_connection(&self, connection: &Connection);

    /// Every connection except those whose ids are in `excluded`.
    async fn send_all(
        &self,
        message: Arc<SerializedHubMessage>,
        excluded: &[String],
    ) -> Result<usize, LifetimeError>;
    async fn send_connection(
        &self,
        connection_id: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<usize, LifetimeError>;
    /// Every connection of the principal `sub`.
    async fn send_user(
        &self,
        sub: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<usize, LifetimeError>;
    /// Every connection in any of `groups`, once each.
    async fn send_groups(
        &self,
        groups: &[String],
        message: Arc<SerializedHubMessage>,
    ) -> Result<usize, LifetimeError>;

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError>;
    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError>;

    async fn connection_count(&self) -> Result<usize, LifetimeError>;
    /// Distinct principals (`sub`) connected.
    async fn user_count(&self) -> Result<usize, LifetimeError>;
    /// This node's connections of `sub` (to close them on revocation or kick).
    async fn user_connections(&self, sub: &str) -> Result<Vec<Arc<Connection>>, LifetimeError>;
}

/// The single-node lifetime manager.
#[derive(Debug)]
pub struct InProcessLifetimeManager {
    connections: DashMap<String, Arc<Connection>>,
    /// `sub` -> connection ids.
    users: DashMap<String, HashSet<String>>,
    /// group -> connection ids.
    groups: DashMap<String, HashSet<String>>,
    /// connection id -> its groups, to leave them all on disconnect.
    memberships: DashMap<String, HashSet<String>>,
    max_groups_per_connection: usize,
}

impl InProcessLifetimeManager {
    pub fn new(max_groups_per_connection: usize) -> Self {
        Self {
            connections: DashMap::new(),
            users: DashMap::new(),
            groups: DashMap::new(),
            memberships: DashMap::new(),
            max_groups_per_connection,
        }
    }

    fn deliver(&self, connection: &Connection, message: &SerializedHubMessage) -> bool {
        let Some(protocol) = connection.protocol() else {
            return false;
        };
        match message.bytes(protocol) {
            Ok(bytes) => connection.try_send(bytes).is_ok(),
            Err(err) => {
                tracing::error!(error = %err, "cannot encode a message for sending");
                false
            }
        }
    }

    /// Delivers to the ids given, skipping ids no longer connected. Ids are collected first so
    /// no map lock is held while sending.
    fn deliver_to_ids(
        &self,
        ids: impl IntoIterator<Item = String>,
        message: &SerializedHubMessage,
    ) -> usize {
        ids.into_iter()
            .filter_map(|id| self.connections.get(&id).map(|c| c.clone()))
            .filter(|c| self.deliver(c, message))
            .count()
    }
}

#[async_trait]
impl HubLifetimeManager for InProcessLifetimeManager {
    async fn add_connection(&self, connection: Arc<Connection>) -> Result<(), LifetimeError> {
        let sub = connection.principal().sub.clone();
        self.users
            .entry(sub)
            .or_default()
            .insert(connection.id.clone());
        self.connections.insert(connection.id.clone(), connection);
        Ok(())
    }

    async fn remove_connection(&self, connection: &Connection) {
        self.connections.remove(&connection.id);
        let sub = connection.principal().sub.clone();
        self.users.remove_if_mut(&sub, |_, ids| {
            ids.remove(&connection.id);
            ids.is_empty()
        });
        if let Some((_, groups)) = self.memberships.remove(&connection.id) {
            for group in groups {
                self.groups.remove_if_mut(&group, |_, ids| {
                    ids.remove(&connection.id);
                    ids.is_empty()
                });
            }
        }
    }

    async fn send_all(
        &self,
        message: Arc<SerializedHubMessage>,
        excluded: &[String],
    ) -> Result<usize, LifetimeError> {
        let recipients: Vec<Arc<Connection>> = self
            .connections
            .iter()
            .filter(|e| !excluded.contains(e.key()))
            .map(|e| e.value().clone())
            .collect();
        Ok(recipients
            .iter()
            .filter(|c| self.deliver(c, &message))
            .count())
    }

    async fn send_connection(
        &self,
        connection_id: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<usize, LifetimeError> {
        Ok(self.deliver_to_ids([connection_id.to_string()], &message))
    }

    async fn send_user(
        &self,
        sub: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<usize, LifetimeError> {
        let ids: Vec<String> = self
            .users
            .get(sub)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        Ok(self.deliver_to_ids(ids, &message))
    }

    async fn send_groups(
        &self,
        groups: &[String],
        message: Arc<SerializedHubMessage>,
    ) -> Result<usize, LifetimeError> {
        let mut ids = HashSet::new();
        for group in groups {
            if let Some(members) = self.groups.get(group) {
                ids.extend(members.iter().cloned());
            }
        }
        Ok(self.deliver_to_ids(ids, &message))
    }

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError> {
        if !self.connections.contains_key(connection_id) {
            return Err(LifetimeError::UnknownConnection(connection_id.to_string()));
        }
        {
            let mut memberships = self
                .memberships
                .entry(connection_id.to_string())
                .or_default();
            if !memberships.contains(group) && memberships.len() >= self.max_groups_per_connection {
                return Err(LifetimeError::TooManyGroups(self.max_groups_per_connection));
            }
            memberships.insert(group.to_string());
        }
        self.groups
            .entry(group.to_string())
            .or_default()
            .insert(connection_id.to_string());
        Ok(())
    }

    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        if let Some(mut memberships) = self.memberships.get_mut(connection_id) {
            memberships.remove(group);
        }
        self.groups.remove_if_mut(group, |_, ids| {
            ids.remove(connection_id);
            ids.is_empty()
        });
        Ok(())
    }

    async fn connection_count(&self) -> Result<usize, LifetimeError> {
        Ok(self.connections.len())
    }

    async fn user_count(&self) -> Result<usize, LifetimeError> {
        Ok(self.users.len())
    }

    async fn user_connections(&self, sub: &str) -> Result<Vec<Arc<Connection>>, LifetimeError> {
        let ids: Vec<String> = self
            .users
            .get(sub)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        Ok(ids
            .into_iter()
            .filter_map(|id| self.connections.get(&id).map(|c| c.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::protocol::{HubMessage, HubProtocol};
    use tokio_util::sync::CancellationToken;

    fn connection(sub: &str, protocol: HubProtocol) -> Arc<Connection> {
        let principal = Principal {
            sub: sub.to_string(),
            roles: vec!["user".into()],
            jti: None,
            sid: None,
            owner: None,
            name: None,
            issued_at: None,
            expires_at: i64::MAX,
            kid: "k".into(),
        };
        let id = crate::auth::issue::random_id();
        let connection = Connection::new(
            id.clone(),
            id,
            Arc::from("home"),
            principal,
            8,
            &CancellationToken::new(),
        );
        connection.set_protocol(protocol);
        connection
    }

    fn message(text: &str) -> Arc<SerializedHubMessage> {
        Arc::new(SerializedHubMessage::new(HubMessage::invocation(
            "SystemMessage",
            vec![serde_json::json!(text)],
        )))
    }

    /// How many frames reached the connection's queue (and empties it).
    fn received(connection: &Connection) -> usize {
        std::iter::from_fn(|| connection.try_recv_outbound()).count()
    }

    #[tokio::test]
    async fn every_kind_of_send_reaches_exactly_its_recipients() {
        let hub = InProcessLifetimeManager::new(2);
        let alice_json = connection("alice", HubProtocol::Json);
        let alice_msgpack = connection("alice", HubProtocol::MessagePack);
        let bob = connection("bob", HubProtocol::Json);
        let carol = connection("carol", HubProtocol::Json);
        for c in [&alice_json, &alice_msgpack, &bob, &carol] {
            hub.add_connection(c.clone()).await.unwrap();
        }
        assert_eq!(hub.connection_count().await.unwrap(), 4);
        assert_eq!(hub.user_count().await.unwrap(), 3);

        assert_eq!(hub.send_user("alice", message("u")).await.unwrap(), 2);
        assert_eq!(
            (
                received(&alice_json),
                received(&alice_msgpack),
                received(&bob)
            ),
            (1, 1, 0)
        );

        hub.add_to_group(&bob.id, "g1").await.unwrap();
        hub.add_to_group(&carol.id, "g1").await.unwrap();
        hub.add_to_group(&carol.id, "g2").await.unwrap();
        let both = ["g1".to_string(), "g2".to_string()];
        // Carol is in both groups and gets the message once.
        assert_eq!(hub.send_groups(&both, message("g")).await.unwrap(), 2);
        assert_eq!((received(&bob), received(&carol)), (1, 1));
        assert_eq!(
            hub.add_to_group(&carol.id, "g3").await,
            Err(LifetimeError::TooManyGroups(2))
        );
        hub.remove_from_group(&carol.id, "g1").await.unwrap();
        assert_eq!(hub.send_groups(&both[..1], message("g1")).await.unwrap(), 1);
        assert_eq!((received(&bob), received(&carol)), (1, 0));

        let excluded = [bob.id.clone()];
        assert_eq!(hub.send_all(message("a"), &excluded).await.unwrap(), 3);
        assert_eq!(received(&bob), 0);
        assert_eq!(hub.send_connection(&bob.id, message("c")).await.unwrap(), 1);
        assert_eq!(received(&bob), 1);

        // Leaving removes the connection from its user and its groups.
        hub.remove_connection(&carol).await;
        assert_eq!(hub.send_groups(&both, message("gone")).await.unwrap(), 1);
        assert_eq!(hub.user_count().await.unwrap(), 2);
        assert!(hub.user_connections("carol").await.unwrap().is_empty());
        assert_eq!(
            hub.add_to_group(&carol.id, "g1").await,
            Err(LifetimeError::UnknownConnection(carol.id.clone()))
        );
    }

    #[tokio::test]
    async fn a_broadcast_is_encoded_once_per_protocol_and_shared() {
        let hub = InProcessLifetimeManager::new(4);
        let first = connection("a", HubProtocol::Json);
        let second = connection("b", HubProtocol::Json);
        let binary = connection("c", HubProtocol::MessagePack);
        for c in [&first, &second, &binary] {
            hub.add_connection(c.clone()).await.unwrap();
        }
        assert_eq!(hub.send_all(message("once"), &[]).await.unwrap(), 3);
        let (a, b) = (
            first.try_recv_outbound().unwrap(),
            second.try_recv_outbound().unwrap(),
        );
        // The same allocation: encoded once, shared by reference count.
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert!(a.ends_with(&[0x1e]));
        assert_ne!(binary.try_recv_outbound().unwrap(), a);
    }

    #[tokio::test]
    async fn a_full_queue_closes_that_connection_and_spares_the_others() {
        let hub = InProcessLifetimeManager::new(4);
        let slow = connection("slow", HubProtocol::Json);
        let fine = connection("fine", HubProtocol::Json);
        hub.add_connection(slow.clone()).await.unwrap();
        hub.add_connection(fine.clone()).await.unwrap();
        for i in 0..8 {
            assert_eq!(hub.send_all(message(&i.to_string()), &[]).await.unwrap(), 2);
            received(&fine);
        }
        // The ninth does not fit the slow connection's queue of 8: it is closed, not waited for.
        assert_eq!(hub.send_all(message("9"), &[]).await.unwrap(), 1);
        assert_eq!(
            slow.close_reason(),
            Some(&crate::connection::CloseReason::SlowConsumer)
        );
        assert!(!fine.is_closed());
    }
}
