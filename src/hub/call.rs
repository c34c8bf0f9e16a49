//! What a hub method sees: the calling connection, its principal, and the clients it can send to.

use super::lifetime::{ConnectedUser, ConnectionInfo, HubLifetimeManager, LifetimeError};
use crate::auth::Principal;
use crate::connection::CloseReason;
use crate::connection::Connection;
use crate::protocol::{HubMessage, SerializedHubMessage};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The context of one invocation (or of a connect/disconnect hook): who calls, on which
/// connection, and the hub's clients to send to.
#[derive(Clone)]
pub struct Call {
    /// The calling connection: internal, not stable API (use [`Call::connection_id`]).
    #[doc(hidden)]
    pub connection: Arc<Connection>,
    /// The principal at the time of the call (a later in-band refresh does not change it).
    pub principal: Arc<Principal>,
    /// Sends to the hub's connections, groups and presence.
    pub clients: Clients,
    /// Cancelled when the caller cancels the stream or the connection closes.
    pub cancel: CancellationToken,
    /// The caller's id of this invocation (none for a lifecycle hook, or a call that asked for
    /// no answer); chosen by the client, unique among its connection's running calls only.
    pub invocation_id: Option<String>,
}

impl Call {
    /// The context of a call on `connection` to the hub `lifetime` manages.
    #[doc(hidden)]
    pub fn new(connection: Arc<Connection>, lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self {
            principal: connection.principal(),
            cancel: connection.cancellation(),
            clients: Clients::new(lifetime),
            connection,
            invocation_id: None,
        }
    }

    /// The id of the calling connection: what [`Clients::connection`] and
    /// [`Clients::add_to_group`] address, on any node.
    pub fn connection_id(&self) -> &str {
        &self.connection.id
    }

    /// The calling connection's name in log lines (never its token).
    pub fn log_id(&self) -> &str {
        self.connection.log_id()
    }

    /// Ends the caller's transport the way a network failure would (a WebSocket ends without
    /// a close frame, a poll or event stream ends), leaving the connection to its reconnect
    /// rules: for trying out a client's reconnect handling.
    pub fn drop_transport(&self) {
        self.connection.end_attachment();
    }
}

/// Sends to other connections of the same hub. A send never waits for a slow recipient, and
/// `Ok(())` means it was handed on, not that anybody was connected to receive it. With
/// `[cluster]` every send, group and presence question reaches every node.
///
/// ```
/// use signet::{bind, Call, HubError, MethodResult};
/// use serde_json::Value;
///
/// /// `Join(room)`: the caller enters the room, whose members are told.
/// async fn join(call: Call, args: Vec<Value>) -> MethodResult {
///     let (room,): (String,) = bind(args)?;
///     call.clients
///         .add_to_group(call.connection_id(), &room)
///         .await
///         .map_err(|err| HubError::hub(err.to_string()))?;
///     let who = Value::String(call.principal.sub.clone());
///     call.clients
///         .group(&room, "Joined", vec![who])
///         .await
///         .map_err(HubError::internal)?;
///     Ok(None)
/// }
/// ```
#[derive(Clone)]
pub struct Clients {
    lifetime: Arc<dyn HubLifetimeManager>,
}

fn message(target: &str, arguments: Vec<Value>) -> Arc<SerializedHubMessage> {
    Arc::new(SerializedHubMessage::new(HubMessage::invocation(
        target, arguments,
    )))
}

impl Clients {
    /// Sends through `lifetime`: a hub's, for a caller outside any invocation (the publish API).
    #[doc(hidden)]
    pub fn new(lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self { lifetime }
    }

    /// The hub's lifetime manager: internal, not stable API.
    #[doc(hidden)]
    pub fn lifetime(&self) -> &Arc<dyn HubLifetimeManager> {
        &self.lifetime
    }

    /// Calls `target` on every connection of the hub.
    pub async fn all(&self, target: &str, arguments: Vec<Value>) -> Result<(), LifetimeError> {
        self.lifetime
            .send_all(message(target, arguments), &[])
            .await
    }

    /// Calls `target` on every connection of the hub except those whose ids are `excluded`
    /// (the caller's own, [`Call::connection_id`], for example).
    pub async fn all_except(
        &self,
        target: &str,
        arguments: Vec<Value>,
        excluded: &[String],
    ) -> Result<(), LifetimeError> {
        self.lifetime
            .send_all(message(target, arguments), excluded)
            .await
    }

    /// Calls `target` on one connection, on whichever node holds it.
    pub async fn connection(
        &self,
        connection_id: &str,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<(), LifetimeError> {
        self.lifetime
            .send_connection(connection_id, message(target, arguments))
            .await
    }

    /// Every connection of the principal `sub`.
    pub async fn user(
        &self,
        sub: &str,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<(), LifetimeError> {
        self.lifetime
            .send_user(sub, message(target, arguments))
            .await
    }

    /// Calls `target` once on every connection in any of `groups`.
    pub async fn groups(
        &self,
        groups: &[String],
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<(), LifetimeError> {
        self.lifetime
            .send_groups(groups, message(target, arguments))
            .await
    }

    /// Calls `target` on every connection in `group`.
    pub async fn group(
        &self,
        group: &str,
        target: &str,
        arguments: Vec<Value>,
    ) -> Result<(), LifetimeError> {
        self.groups(&[group.to_string()], target, arguments).await
    }

    /// Adds a connection of the hub to `group` (a connection may be in at most
    /// `[hub] max_groups_per_connection` groups); it leaves every group when it ends.
    pub async fn add_to_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        self.lifetime.add_to_group(connection_id, group).await
    }

    /// Removes a connection from `group` (nothing happens if it was not in it).
    pub async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        self.lifetime.remove_from_group(connection_id, group).await
    }

    /// Presence: for each of `subs`, in order, whether it has a connection to the hub.
    pub async fn online(&self, subs: &[String]) -> Result<Vec<bool>, LifetimeError> {
        self.lifetime.online(subs).await
    }

    /// The connections of the principal `sub` to the hub, on every node, as data.
    pub async fn connections_of(&self, sub: &str) -> Result<Vec<ConnectionInfo>, LifetimeError> {
        self.lifetime.connections_of(sub).await
    }

    /// How many connections the hub has, on every node.
    pub async fn connection_count(&self) -> Result<usize, LifetimeError> {
        self.lifetime.connection_count().await
    }

    /// How many distinct principals (`sub`) are connected to the hub, on every node.
    pub async fn user_count(&self) -> Result<usize, LifetimeError> {
        self.lifetime.user_count().await
    }

    /// The users connected to the hub with their connection counts, sorted by name, at most
    /// 500 of them.
    pub async fn connected_users(&self) -> Result<Vec<ConnectedUser>, LifetimeError> {
        self.lifetime.connected_users().await
    }

    /// Closes every connection of the principal `sub`, on every hub, node and transport, with
    /// `allowReconnect: false`; returns how many were closed.
    pub async fn disconnect_user(&self, sub: &str) -> Result<usize, LifetimeError> {
        self.lifetime
            .disconnect_user(sub, CloseReason::Kicked)
            .await
    }
}
