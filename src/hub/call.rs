//! What a hub method sees: the calling connection, its principal, and the clients it can send to.

use super::lifetime::{HubLifetimeManager, LifetimeError};
use crate::auth::Principal;
use crate::connection::Connection;
use crate::protocol::{HubMessage, SerializedHubMessage};
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The context of one invocation.
#[derive(Clone)]
pub struct Call {
    pub connection: Arc<Connection>,
    /// The principal at the time of the call (a later in-band refresh does not change it).
    pub principal: Arc<Principal>,
    pub clients: Clients,
    /// Cancelled when the caller cancels the stream or the connection closes.
    pub cancel: CancellationToken,
    /// The caller's id of this invocation (none for a lifecycle hook, or a call that asked for
    /// no answer); chosen by the client, unique among its connection's running calls only.
    pub invocation_id: Option<String>,
}

impl Call {
    pub fn new(connection: Arc<Connection>, lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self {
            principal: connection.principal(),
            cancel: connection.cancellation(),
            clients: Clients::new(lifetime),
            connection,
            invocation_id: None,
        }
    }
}

/// Sends to other connections of the same hub. A send never waits for a slow recipient, and
/// `Ok(())` means it was handed on, not that anybody was connected to receive it.
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
    pub fn new(lifetime: Arc<dyn HubLifetimeManager>) -> Self {
        Self { lifetime }
    }

    pub fn lifetime(&self) -> &Arc<dyn HubLifetimeManager> {
        &self.lifetime
    }

    /// Calls `target` on every connection of the hub.
    pub async fn all(&self, target: &str, arguments: Vec<Value>) -> Result<(), LifetimeError> {
        self.lifetime
            .send_all(message(target, arguments), &[])
            .await
    }

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
}
