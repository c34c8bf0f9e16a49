//! The lifetime manager: who is connected to a hub, and every send to other connections.
//!
//! The trait is the seam toward other nodes, and what a Redis backplane will implement; it
//! speaks data, never local handles: a send returns `Ok(())` once it is handed on (a publish
//! cannot know who received it), presence and counts are questions of their own, and a
//! connection, wherever it lives, is a [`ConnectionInfo`]. [`InProcessLifetimeManager`] is the
//! local adapter that serves one node (a backplane would wrap it for its own connections).
//! Sends encode a message once per protocol ([`SerializedHubMessage`]) and hand the shared
//! bytes to each recipient with [`Connection::try_send`], so a broadcast never waits for a slow
//! client and never holds a lock across an `.await`.

use crate::connection::{Claim, CloseReason, Connection, ConnectionRegistry};
use crate::protocol::{HubProtocol, SerializedHubMessage};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::Arc;

/// The shared state other nodes see (a backplane) could not be reached. The in-process
/// implementations never answer it; a caller decides whether to fail closed or soft.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the backplane is unavailable: {0}")]
pub struct BackplaneError(pub String);

/// Why a send, a group change or a presence question failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    /// No connection of the hub has this id (on any node).
    #[error("connection {0} is not connected to this hub")]
    UnknownConnection(String),
    /// The connection is in `[hub] max_groups_per_connection` groups already.
    #[error("a connection may belong to at most {0} groups")]
    TooManyGroups(usize),
    /// The cluster's Redis could not be reached.
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
}

/// A connection of a hub as any node sees it: plain data, whichever node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection id (what a send to one connection addresses).
    pub id: String,
    /// The principal's `sub`.
    pub sub: String,
    /// The id message keys of its current token derive from (see
    /// [`crate::auth::Principal::message_session`]), to seal an envelope for that connection.
    pub message_session: Option<String>,
}

impl ConnectionInfo {
    fn of(connection: &Connection) -> Self {
        let principal = connection.principal();
        Self {
            id: connection.id.clone(),
            sub: principal.sub.clone(),
            message_session: principal.message_session().map(str::to_owned),
        }
    }
}

/// Most users [`HubLifetimeManager::connected_users`] lists: the size of one answer (the count
/// is [`HubLifetimeManager::user_count`]), part of `ListConnectedUsers`' contract.
pub const MAX_LISTED_USERS: usize = 500;

/// A user connected to a hub, as any node sees it: plain data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectedUser {
    /// The principal's `sub`.
    pub sub: String,
    /// Its display name, when its token has one.
    pub name: Option<String>,
    /// Its roles.
    pub roles: Vec<String>,
    /// How many connections the user holds (on every node, once merged).
    pub connections: usize,
}

/// Merges lists of connected users (adding up a user's connections), sorts them by name
/// (case-insensitively, then by `sub`) and keeps the first `MAX_LISTED_USERS` (500). Merging
/// the first `MAX_LISTED_USERS` of each node gives the first of all: a user among the first
/// overall is among the first on every node it is on.
pub fn first_listed(users: impl IntoIterator<Item = ConnectedUser>) -> Vec<ConnectedUser> {
    let mut merged: std::collections::BTreeMap<(String, String), ConnectedUser> =
        std::collections::BTreeMap::new();
    for user in users {
        let key = (
            user.name.as_deref().unwrap_or_default().to_lowercase(),
            user.sub.clone(),
        );
        merged
            .entry(key)
            .and_modify(|known| known.connections += user.connections)
            .or_insert(user);
        if merged.len() > MAX_LISTED_USERS {
            merged.pop_last();
        }
    }
    merged.into_values().collect()
}

/// Membership, presence and sends for one hub.
///
/// Sends answer `Ok(())` once the message is handed on: whether a recipient was connected is
/// not theirs to say (ask [`HubLifetimeManager::online`]), and a recipient whose queue is full
/// is closed rather than waited for.
#[async_trait]
pub trait HubLifetimeManager: Send + Sync {
    /// A connection of this node completed its handshake.
    async fn add_connection(&self, connection: Arc<Connection>) -> Result<(), LifetimeError>;
    /// A connection of this node ended; it leaves every group.
    async fn remove_connection(&self, connection: &Connection);

    /// Every connection except those whose ids are in `excluded`.
    async fn send_all(
        &self,
        message: Arc<SerializedHubMessage>,
        excluded: &[String],
    ) -> Result<(), LifetimeError>;
    async fn send_connection(
        &self,
        connection_id: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError>;
    /// Every connection of the principal `sub`.
    async fn send_user(
        &self,
        sub: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError>;
    /// Every connection in any of `groups`, once each.
    async fn send_groups(
        &self,
        groups: &[String],
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError>;

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError>;
    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError>;

    /// Presence: for each of `subs`, in order, whether it has a connection to this hub.
    async fn online(&self, subs: &[String]) -> Result<Vec<bool>, LifetimeError>;
    /// The connections of `sub` to this hub, as data.
    async fn connections_of(&self, sub: &str) -> Result<Vec<ConnectionInfo>, LifetimeError>;
    /// Closes every connection of `sub`, on every hub and transport, with `reason`; returns
    /// how many were closed.
    async fn disconnect_user(&self, sub: &str, reason: CloseReason)
        -> Result<usize, LifetimeError>;

    async fn connection_count(&self) -> Result<usize, LifetimeError>;
    /// Distinct principals (`sub`) connected.
    async fn user_count(&self) -> Result<usize, LifetimeError>;
    /// The connected users with their connection counts, sorted by name, at most
    /// `MAX_LISTED_USERS` (500; [`first_listed`]).
    async fn connected_users(&self) -> Result<Vec<ConnectedUser>, LifetimeError>;
}

/// The single-node lifetime manager: this node's connections, by id, user and group.
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
    /// Every connection of the node, whatever its hub or state, for closing a user's.
    registry: Arc<ConnectionRegistry>,
}

impl InProcessLifetimeManager {
    pub fn new(max_groups_per_connection: usize, registry: Arc<ConnectionRegistry>) -> Self {
        Self {
            connections: DashMap::new(),
            users: DashMap::new(),
            groups: DashMap::new(),
            memberships: DashMap::new(),
            max_groups_per_connection,
            registry,
        }
    }

    /// Hands `message` to each of `recipients` without waiting: the bytes are taken from the
    /// message once per protocol (not once per recipient), and a full queue closes that
    /// connection (slow consumer) while the others are unaffected.
    fn deliver(&self, recipients: &[Arc<Connection>], message: &SerializedHubMessage) {
        let (mut json, mut msgpack): (Option<Bytes>, Option<Bytes>) = (None, None);
        for connection in recipients {
            let Some(protocol) = connection.protocol() else {
                continue;
            };
            let slot = match protocol {
                HubProtocol::Json => &mut json,
                HubProtocol::MessagePack => &mut msgpack,
            };
            let bytes = match slot {
                Some(bytes) => bytes.clone(),
                None => match message.bytes(protocol) {
                    Ok(bytes) => slot.insert(bytes).clone(),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot encode a message for sending");
                        continue;
                    }
                },
            };
            let _ = connection.try_send(bytes);
        }
    }

    /// Delivers to the ids given, skipping ids no longer connected. The recipients are
    /// collected first so no map lock is held while sending.
    fn deliver_to_ids<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
        message: &SerializedHubMessage,
    ) {
        let recipients: Vec<Arc<Connection>> = ids
            .into_iter()
            .filter_map(|id| self.connections.get(id).map(|c| c.clone()))
            .collect();
        self.deliver(&recipients, message);
    }

    /// Whether `connection_id` is a connection of this node that completed its handshake.
    pub fn is_local(&self, connection_id: &str) -> bool {
        self.connections.contains_key(connection_id)
    }

    /// This node's connections by user, as data (what a backplane tells other nodes).
    pub fn presence(&self) -> Vec<(String, Vec<ConnectionInfo>)> {
        let subs: Vec<String> = self.users.iter().map(|e| e.key().clone()).collect();
        subs.into_iter()
            .map(|sub| {
                let connections = self
                    .ids_of(&sub)
                    .into_iter()
                    .filter_map(|id| self.connections.get(&id).map(|c| ConnectionInfo::of(&c)))
                    .collect();
                (sub, connections)
            })
            .collect()
    }

    fn ids_of(&self, sub: &str) -> Vec<String> {
        self.users
            .get(sub)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
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
    ) -> Result<(), LifetimeError> {
        // One pass over the map, cloning handles (not ids) for the sends below.
        let recipients: Vec<Arc<Connection>> = self
            .connections
            .iter()
            .filter(|e| !excluded.contains(e.key()))
            .map(|e| e.value().clone())
            .collect();
        self.deliver(&recipients, &message);
        Ok(())
    }

    async fn send_connection(
        &self,
        connection_id: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError> {
        if let Some(connection) = self.connections.get(connection_id).map(|c| c.clone()) {
            self.deliver(&[connection], &message);
        }
        Ok(())
    }

    async fn send_user(
        &self,
        sub: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError> {
        self.deliver_to_ids(&self.ids_of(sub), &message);
        Ok(())
    }

    async fn send_groups(
        &self,
        groups: &[String],
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError> {
        let mut ids = HashSet::new();
        for group in groups {
            if let Some(members) = self.groups.get(group) {
                ids.extend(members.iter().cloned());
            }
        }
        self.deliver_to_ids(&ids, &message);
        Ok(())
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

    async fn online(&self, subs: &[String]) -> Result<Vec<bool>, LifetimeError> {
        Ok(subs
            .iter()
            .map(|sub| self.users.contains_key(sub))
            .collect())
    }

    async fn connections_of(&self, sub: &str) -> Result<Vec<ConnectionInfo>, LifetimeError> {
        Ok(self
            .ids_of(sub)
            .into_iter()
            .filter_map(|id| self.connections.get(&id).map(|c| ConnectionInfo::of(&c)))
            .collect())
    }

    async fn disconnect_user(
        &self,
        sub: &str,
        reason: CloseReason,
    ) -> Result<usize, LifetimeError> {
        Ok(self.registry.close_matching(Claim::Subject(sub), &reason))
    }

    async fn connection_count(&self) -> Result<usize, LifetimeError> {
        Ok(self.connections.len())
    }

    async fn user_count(&self) -> Result<usize, LifetimeError> {
        Ok(self.users.len())
    }

    async fn connected_users(&self) -> Result<Vec<ConnectedUser>, LifetimeError> {
        Ok(first_listed(self.presence().into_iter().filter_map(
            |(_, connections)| {
                let first = connections.first()?;
                let principal = self.connections.get(&first.id)?.principal();
                Some(ConnectedUser {
                    sub: principal.sub.clone(),
                    name: principal.name.clone(),
                    roles: principal.roles.clone(),
                    connections: connections.len(),
                })
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::protocol::{HubMessage, HubProtocol};
    use tokio_util::sync::CancellationToken;

    fn principal(sub: &str) -> Principal {
        Principal {
            sub: sub.to_string(),
            roles: vec!["user".into()],
            jti: None,
            sid: Some(format!("sid-{sub}")),
            owner: None,
            name: None,
            issued_at: None,
            expires_at: i64::MAX,
            kid: "k".into(),
        }
    }

    fn connection(sub: &str, protocol: HubProtocol) -> Arc<Connection> {
        let id = crate::auth::issue::random_id();
        let connection = Connection::new(
            id.clone(),
            id,
            Arc::from("home"),
            principal(sub),
            8,
            &CancellationToken::new(),
        );
        connection.set_protocol(protocol);
        connection
    }

    fn manager(max_groups: usize) -> InProcessLifetimeManager {
        InProcessLifetimeManager::new(max_groups, Arc::new(ConnectionRegistry::new(100, 100)))
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

    fn subs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn every_kind_of_send_reaches_exactly_its_recipients() {
        let hub = manager(2);
        let alice_json = connection("alice", HubProtocol::Json);
        let alice_msgpack = connection("alice", HubProtocol::MessagePack);
        let bob = connection("bob", HubProtocol::Json);
        let carol = connection("carol", HubProtocol::Json);
        for c in [&alice_json, &alice_msgpack, &bob, &carol] {
            hub.add_connection(c.clone()).await.unwrap();
        }
        assert_eq!(hub.connection_count().await.unwrap(), 4);
        assert_eq!(hub.user_count().await.unwrap(), 3);

        hub.send_user("alice", message("u")).await.unwrap();
        assert_eq!(
            (
                received(&alice_json),
                received(&alice_msgpack),
                received(&bob)
            ),
            (1, 1, 0)
        );
        // Nobody connected as "dave": the send is handed on all the same.
        hub.send_user("dave", message("u")).await.unwrap();

        hub.add_to_group(&bob.id, "g1").await.unwrap();
        hub.add_to_group(&carol.id, "g1").await.unwrap();
        hub.add_to_group(&carol.id, "g2").await.unwrap();
        let both = ["g1".to_string(), "g2".to_string()];
        // Carol is in both groups and gets the message once.
        hub.send_groups(&both, message("g")).await.unwrap();
        assert_eq!((received(&bob), received(&carol)), (1, 1));
        assert_eq!(
            hub.add_to_group(&carol.id, "g3").await,
            Err(LifetimeError::TooManyGroups(2))
        );
        hub.remove_from_group(&carol.id, "g1").await.unwrap();
        hub.send_groups(&both[..1], message("g1")).await.unwrap();
        assert_eq!((received(&bob), received(&carol)), (1, 0));

        let excluded = [bob.id.clone()];
        hub.send_all(message("a"), &excluded).await.unwrap();
        assert_eq!(
            (received(&alice_json), received(&bob), received(&carol)),
            (1, 0, 1)
        );
        received(&alice_msgpack);
        hub.send_connection(&bob.id, message("c")).await.unwrap();
        assert_eq!((received(&bob), received(&alice_json)), (1, 0));

        // Leaving removes the connection from its user and its groups.
        hub.remove_connection(&carol).await;
        hub.send_groups(&both, message("gone")).await.unwrap();
        assert_eq!((received(&bob), received(&carol)), (1, 0));
        assert_eq!(hub.user_count().await.unwrap(), 2);
        assert!(hub.connections_of("carol").await.unwrap().is_empty());
        assert_eq!(
            hub.add_to_group(&carol.id, "g1").await,
            Err(LifetimeError::UnknownConnection(carol.id.clone()))
        );
    }

    #[tokio::test]
    async fn presence_is_one_question_for_many_users_and_connections_are_data() {
        let hub = manager(2);
        let alice = connection("alice", HubProtocol::Json);
        let second = connection("alice", HubProtocol::Json);
        let bob = connection("bob", HubProtocol::Json);
        for c in [&alice, &second, &bob] {
            hub.add_connection(c.clone()).await.unwrap();
        }
        assert_eq!(
            hub.online(&subs(&["bob", "carol", "alice"])).await.unwrap(),
            vec![true, false, true]
        );
        let mut of_alice = hub.connections_of("alice").await.unwrap();
        of_alice.sort_by(|a, b| a.id.cmp(&b.id));
        let mut want = vec![alice.id.clone(), second.id.clone()];
        want.sort();
        assert_eq!(
            of_alice.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            want
        );
        assert!(of_alice
            .iter()
            .all(|c| c.sub == "alice" && c.message_session.as_deref() == Some("sid-alice")));

        hub.remove_connection(&bob).await;
        assert_eq!(hub.online(&subs(&["bob"])).await.unwrap(), vec![false]);
        hub.remove_connection(&alice).await;
        assert_eq!(hub.online(&subs(&["alice"])).await.unwrap(), vec![true]);
    }

    #[tokio::test]
    async fn disconnect_user_closes_every_connection_of_that_user_only() {
        let registry = Arc::new(ConnectionRegistry::new(100, 100));
        let hub = InProcessLifetimeManager::new(2, registry.clone());
        let alice = connection("alice", HubProtocol::Json);
        // Registered but never through its handshake: closed all the same.
        let connecting = connection("alice", HubProtocol::Json);
        let bob = connection("bob", HubProtocol::Json);
        for c in [&alice, &connecting, &bob] {
            registry.insert(c.clone()).unwrap();
        }
        hub.add_connection(alice.clone()).await.unwrap();
        hub.add_connection(bob.clone()).await.unwrap();
        assert_eq!(
            hub.disconnect_user("alice", CloseReason::Kicked)
                .await
                .unwrap(),
            2
        );
        assert_eq!(alice.close_reason(), Some(&CloseReason::Kicked));
        assert_eq!(connecting.close_reason(), Some(&CloseReason::Kicked));
        assert!(!bob.is_closed());
        assert_eq!(
            hub.disconnect_user("nobody", CloseReason::Kicked)
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn a_broadcast_is_encoded_once_per_protocol_and_shared() {
        let hub = manager(4);
        let first = connection("a", HubProtocol::Json);
        let second = connection("b", HubProtocol::Json);
        let binary = connection("c", HubProtocol::MessagePack);
        for c in [&first, &second, &binary] {
            hub.add_connection(c.clone()).await.unwrap();
        }
        hub.send_all(message("once"), &[]).await.unwrap();
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
        let hub = manager(4);
        let slow = connection("slow", HubProtocol::Json);
        let fine = connection("fine", HubProtocol::Json);
        hub.add_connection(slow.clone()).await.unwrap();
        hub.add_connection(fine.clone()).await.unwrap();
        for i in 0..8 {
            hub.send_all(message(&i.to_string()), &[]).await.unwrap();
            assert_eq!(received(&fine), 1);
        }
        // The ninth does not fit the slow connection's queue of 8: it is closed, not waited for.
        hub.send_all(message("9"), &[]).await.unwrap();
        assert_eq!(
            slow.close_reason(),
            Some(&crate::connection::CloseReason::SlowConsumer)
        );
        assert_eq!(received(&fine), 1);
        assert!(!fine.is_closed());
    }
}
