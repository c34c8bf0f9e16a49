//! The hub backplane: [`RedisLifetimeManager`] serves this node's connections through the
//! in-process manager it wraps, and reaches other nodes' over Redis pub/sub.
//!
//! Channels, per hub: `{prefix}:{hub}:all` (every node listens) and `{prefix}:{hub}:node:{id}`
//! (one node's): a send to one connection goes to the channel of the node holding it: the
//! node its id names (`{node}.{random}`), or the one the ownership directory names for a
//! connection another node adopted ([`super::forward`]). Each node holds two subscriptions per
//! hub, whatever its connections. Sends deliver locally at once and hand the frame, encoded once per protocol,
//! to the node's publisher ([`Cluster::send`]), which numbers it on its channel and pipelines
//! it to Redis in order.
//! Group changes for another node's connection and disconnects are requests that the owning
//! nodes apply and answer on the requester's channel. Both are published whatever the list of
//! live nodes says (it lags), and wait for as many answers as `PUBLISH` reached other nodes: a
//! group change that reached none is answered at once (unknown connection).
//!
//! Presence: every node writes its users and connections to `{prefix}:{hub}:presence:{id}`
//! (a hash, `sub` -> connections) and its count beside it, within 250 ms of a change and at
//! least every second, both expiring after 5 s, and keeps its heartbeat in the sorted set
//! `{prefix}:{hub}:nodes`, whose live members it reads every 250 ms. Beside them it writes its
//! first users by name with their names and roles (`{prefix}:{hub}:users:{id}`, JSON), which
//! `ListConnectedUsers` merges. Questions about presence
//! read the nodes that beat in the last 5 s, so a node that dies drops out within 6 s. Counts may be that stale; they are not safety.

use super::wire::{Disconnect, Frame, Origin, Outcome, Payload};
use super::{Cluster, Subscriber};
use crate::connection::{CloseReason, Connection};
use crate::envelope::unix_now_ms;
use crate::hub::{
    first_listed, BackplaneError, ConnectedUser, ConnectionInfo, HubLifetimeManager,
    InProcessLifetimeManager, LifetimeError,
};
use crate::protocol::{HubProtocol, SerializedHubMessage};
use async_trait::async_trait;
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A node whose heartbeat is older than this is gone.
const NODE_TTL: Duration = Duration::from_secs(5);
/// How often presence is checked for changes (and written when changed).
const PRESENCE_TICK: Duration = Duration::from_millis(250);
/// Presence is rewritten at least this often, so it outlives its expiry while the node does.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a group change waits for the owning node's answer.
const GROUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a disconnect waits for the other nodes' counts.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests waiting for answers, at most.
const MAX_WAITING: usize = 4_096;
/// Answers one request waits for, at most (one per node).
const MAX_ANSWERS: usize = 1_024;

/// The lifetime manager of one hub on a node of a cluster.
pub struct RedisLifetimeManager {
    inner: Arc<InProcessLifetimeManager>,
    shared: Arc<Shared>,
}

/// What the manager, its subscriber and its tasks share.
struct Shared {
    cluster: Arc<Cluster>,
    inner: Arc<InProcessLifetimeManager>,
    hub: String,
    all_channel: String,
    /// The other live nodes, as of the last heartbeat.
    others: RwLock<Vec<String>>,
    /// Local membership changed since presence was last written.
    dirty: AtomicBool,
    next_request: AtomicU64,
    waiting: DashMap<u64, mpsc::Sender<(Outcome, u64)>>,
}

impl RedisLifetimeManager {
    /// Wraps `inner` (this node's connections) for hub `hub`, subscribes its channels and
    /// starts its publisher and presence tasks, which end with `shutdown`.
    pub fn start(
        cluster: Arc<Cluster>,
        hub: &str,
        inner: Arc<InProcessLifetimeManager>,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            all_channel: cluster.key(&format!("{hub}:all")),
            hub: hub.to_string(),
            cluster: cluster.clone(),
            inner: inner.clone(),
            others: RwLock::new(Vec::new()),
            dirty: AtomicBool::new(true),
            next_request: AtomicU64::new(1),
            waiting: DashMap::new(),
        });
        cluster.subscribe(shared.all_channel.clone(), shared.clone());
        cluster.subscribe(shared.node_channel(cluster.node_id()), shared.clone());
        tokio::spawn(shared.clone().keep_presence(shutdown));
        Self { inner, shared }
    }

    fn enqueue(&self, channel: String, frame: Frame) -> Result<(), LifetimeError> {
        Ok(self.shared.cluster.send(channel, frame)?)
    }

    /// The other node that holds `connection_id`, if not this one: a connection here is
    /// this node's; else the ownership directory names the node that adopted it; else it is
    /// on the node its id names. Redis failing, the id decides.
    async fn remote_node(&self, connection_id: &str) -> Option<String> {
        if self.inner.is_local(connection_id) {
            return None;
        }
        let this = self.shared.cluster.node_id();
        match super::forward::owner_of_id(&self.shared.cluster, connection_id).await {
            Ok(Some(node)) => return (node != this).then_some(node),
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(error = %err, "cannot read the ownership directory; routing by the id")
            }
        }
        let (node, _) = connection_id.split_once('.')?;
        (node != this).then(|| node.to_string())
    }

    /// Sends `frame` with a new request id to `channel` and collects the answers within
    /// `timeout`: as many as `answers` says of the number of subscribers Redis delivered the
    /// frame to (not the live-node list, which lags). `None` when that was nobody.
    async fn request(
        &self,
        channel: String,
        frame: impl FnOnce(u64) -> Frame,
        answers: impl FnOnce(u64) -> usize,
        timeout: Duration,
    ) -> Result<Option<Vec<(Outcome, u64)>>, LifetimeError> {
        if self.shared.waiting.len() >= MAX_WAITING {
            return Err(unavailable("too many backplane requests waiting"));
        }
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        // Slots are allocated as answers come.
        let (tx, mut rx) = mpsc::channel(MAX_ANSWERS);
        self.shared.waiting.insert(request, tx);
        let answered = async {
            let deadline = tokio::time::Instant::now() + timeout;
            let receivers = self.shared.cluster.send_counted(channel, frame(request))?;
            // Answers that come meanwhile wait in `rx`.
            let answers = match tokio::time::timeout_at(deadline, receivers).await {
                Ok(Ok(Ok(0))) => return Ok(None),
                Ok(Ok(Ok(receivers))) => answers(receivers).min(MAX_ANSWERS),
                Ok(Ok(Err(err))) => return Err(LifetimeError::Backplane(err)),
                Ok(Err(_)) => return Err(unavailable("the node is shutting down")),
                Err(_) => return Err(unavailable("the backplane did not publish in time")),
            };
            let mut got = Vec::new();
            while got.len() < answers {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(answer)) => got.push(answer),
                    _ => break,
                }
            }
            Ok(Some(got))
        }
        .await;
        self.shared.waiting.remove(&request);
        answered
    }

    async fn change_group(
        &self,
        connection_id: &str,
        group: &str,
        add: bool,
    ) -> Result<(), LifetimeError> {
        let Some(node) = self.remote_node(connection_id).await else {
            return if add {
                self.inner.add_to_group(connection_id, group).await
            } else {
                self.inner.remove_from_group(connection_id, group).await
            };
        };
        // Sent whether or not `node` is live as far as this node knows: that view lags (a
        // heartbeat, and until this node first reads it after the other starts), so a node
        // that just started would miss the change. One that is gone has no receiver.
        let (connection, group_name) = (connection_id.to_string(), group.to_string());
        let answers = self
            .request(
                self.shared.node_channel(&node),
                |request| Frame::GroupChange {
                    request,
                    add,
                    connection,
                    group: group_name,
                },
                |_| 1,
                GROUP_TIMEOUT,
            )
            .await?;
        let Some(answers) = answers else {
            return Err(LifetimeError::UnknownConnection(connection_id.to_string()));
        };
        match answers.first() {
            Some((Outcome::Done, _)) => Ok(()),
            Some((Outcome::UnknownConnection, _)) => {
                Err(LifetimeError::UnknownConnection(connection_id.to_string()))
            }
            Some((Outcome::TooManyGroups(n), _)) => Err(LifetimeError::TooManyGroups(*n as usize)),
            None => Err(unavailable(&format!("node {node} did not answer in time"))),
        }
    }

    /// The presence hashes of the other live nodes: `command` (`HMGET`, `HGET`, `HKEYS`) run
    /// on each, in one pipeline.
    async fn ask_others<T: redis::FromRedisValue>(
        &self,
        build: impl Fn(&mut redis::Pipeline, String),
    ) -> Result<Vec<T>, LifetimeError> {
        let others = self.shared.others();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            build(&mut pipe, self.shared.presence_key(node));
        }
        let mut commands = self.shared.cluster.commands();
        pipe.query_async(&mut commands)
            .await
            .map_err(|e| unavailable(&e.to_string()))
    }
}

impl RedisLifetimeManager {
    /// The other live nodes' values of one key each (`key` names it for a node), in one MGET.
    async fn of_others<T: redis::FromRedisValue>(
        &self,
        key: fn(&Shared, &str) -> String,
    ) -> Result<Vec<T>, LifetimeError> {
        let keys: Vec<String> = self
            .shared
            .others()
            .iter()
            .map(|n| key(&self.shared, n))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut commands = self.shared.cluster.commands();
        redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut commands)
            .await
            .map_err(|e| unavailable(&e.to_string()))
    }
}

fn unavailable(why: &str) -> LifetimeError {
    LifetimeError::Backplane(BackplaneError(why.to_string()))
}

fn payload(message: &SerializedHubMessage) -> Result<Payload, LifetimeError> {
    let encode = |protocol| {
        message
            .bytes(protocol)
            .map_err(|e| unavailable(&format!("cannot encode a message: {e}")))
    };
    Ok(Payload {
        json: encode(HubProtocol::Json)?,
        msgpack: encode(HubProtocol::MessagePack)?,
    })
}

impl Shared {
    fn node_channel(&self, node: &str) -> String {
        self.cluster.key(&format!("{}:node:{node}", self.hub))
    }

    fn presence_key(&self, node: &str) -> String {
        self.cluster.key(&format!("{}:presence:{node}", self.hub))
    }

    fn count_key(&self, node: &str) -> String {
        self.cluster.key(&format!("{}:count:{node}", self.hub))
    }

    /// The node's first users by name ([`HubLifetimeManager::connected_users`]), as JSON.
    fn users_key(&self, node: &str) -> String {
        self.cluster.key(&format!("{}:users:{node}", self.hub))
    }

    fn nodes_key(&self) -> String {
        self.cluster.key(&format!("{}:nodes", self.hub))
    }

    fn others(&self) -> Vec<String> {
        self.others.read().map(|o| o.clone()).unwrap_or_default()
    }

    /// Writes presence when it changed or the heartbeat is due, and learns the live nodes.
    async fn keep_presence(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(PRESENCE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_write = tokio::time::Instant::now() - HEARTBEAT;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            // A node shows itself only once it hears the others: a sender that sees it
            // online may count on it receiving.
            if !self.cluster.subscribed() {
                continue;
            }
            let others = if self.dirty.load(Ordering::Relaxed) || last_write.elapsed() >= HEARTBEAT
            {
                self.dirty.store(false, Ordering::Relaxed);
                let written = self.write_presence().await;
                match written {
                    Ok(_) => last_write = tokio::time::Instant::now(),
                    // Written again on the next tick; Redis being down is logged by the keeper.
                    Err(_) => self.dirty.store(true, Ordering::Relaxed),
                }
                written
            } else {
                self.live_nodes().await
            };
            if let (Ok(others), Ok(mut live)) = (others, self.others.write()) {
                *live = others;
            }
        }
        // Leave at once rather than after the expiry.
        let node = self.cluster.node_id().to_string();
        let mut pipe = redis::pipe();
        pipe.del(self.presence_key(&node))
            .del(self.count_key(&node))
            .del(self.users_key(&node))
            .zrem(self.nodes_key(), &node);
        let mut commands = self.cluster.commands();
        let _: redis::RedisResult<()> = pipe.query_async(&mut commands).await;
    }

    /// The other nodes that beat within [`NODE_TTL`].
    async fn live_nodes(&self) -> redis::RedisResult<Vec<String>> {
        let since = unix_now_ms().saturating_sub(u64::try_from(NODE_TTL.as_millis()).unwrap_or(0));
        let mut commands = self.cluster.commands();
        let live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.nodes_key())
            .arg(since)
            .arg("+inf")
            .query_async(&mut commands)
            .await?;
        let node = self.cluster.node_id();
        Ok(live.into_iter().filter(|n| n != node).collect())
    }

    /// Replaces this node's presence, beats its heartbeat, and returns the other live nodes.
    async fn write_presence(&self) -> redis::RedisResult<Vec<String>> {
        let node = self.cluster.node_id();
        let presence = self.inner.presence();
        let count: usize = presence.iter().map(|(_, c)| c.len()).sum();
        let users = self.inner.connected_users().await.unwrap_or_default();
        let users = serde_json::to_string(&users).unwrap_or_else(|_| "[]".into());
        let (key, count_key, nodes) = (
            self.presence_key(node),
            self.count_key(node),
            self.nodes_key(),
        );
        let ttl = u64::try_from(NODE_TTL.as_millis()).unwrap_or(u64::MAX);
        let now = unix_now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        if !presence.is_empty() {
            let fields: Vec<(String, String)> = presence
                .iter()
                .map(|(sub, connections)| (sub.clone(), encode_connections(connections)))
                .collect();
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.pexpire(&key, ttl as i64).ignore();
        }
        pipe.cmd("SET")
            .arg(&count_key)
            .arg(count)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("SET")
            .arg(self.users_key(node))
            .arg(users)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .zadd(&nodes, node, now)
            .ignore()
            .zrembyscore(&nodes, "-inf", now.saturating_sub(ttl))
            .ignore()
            .zrangebyscore(&nodes, now.saturating_sub(ttl), "+inf");
        let mut commands = self.cluster.commands();
        let (live,): (Vec<String>,) = pipe.query_async(&mut commands).await?;
        Ok(live.into_iter().filter(|n| n != node).collect())
    }

    async fn apply(&self, frame: Frame) {
        let inner = &self.inner;
        let message = |p: Payload| Arc::new(SerializedHubMessage::encoded(p.json, p.msgpack));
        // The in-process manager's sends never fail; what it answers is for the requester.
        match frame {
            Frame::All { excluded, payload } => {
                let _ = inner.send_all(message(payload), &excluded).await;
            }
            Frame::User { sub, payload } => {
                let _ = inner.send_user(&sub, message(payload)).await;
            }
            Frame::Groups { groups, payload } => {
                let _ = inner.send_groups(&groups, message(payload)).await;
            }
            Frame::Connection { id, payload } => {
                let _ = inner.send_connection(&id, message(payload)).await;
            }
            _ => {}
        }
    }

    /// Applies a request of node `from` and answers it on that node's channel.
    async fn answer(&self, from: &str, frame: Frame) {
        let (request, outcome, count) = match frame {
            Frame::GroupChange {
                request,
                add,
                connection,
                group,
            } => {
                let result = if add {
                    self.inner.add_to_group(&connection, &group).await
                } else if self.inner.is_local(&connection) {
                    self.inner.remove_from_group(&connection, &group).await
                } else {
                    Err(LifetimeError::UnknownConnection(connection))
                };
                let outcome = match result {
                    Ok(()) => Outcome::Done,
                    Err(LifetimeError::TooManyGroups(n)) => {
                        Outcome::TooManyGroups(u32::try_from(n).unwrap_or(u32::MAX))
                    }
                    Err(_) => Outcome::UnknownConnection,
                };
                (request, outcome, 0)
            }
            Frame::DisconnectUser {
                request,
                sub,
                reason,
            } => {
                let reason = match reason {
                    Disconnect::Kicked => CloseReason::Kicked,
                    Disconnect::Revoked(why) => CloseReason::Revoked(why),
                };
                let closed = self.inner.disconnect_user(&sub, reason).await.unwrap_or(0);
                (request, Outcome::Done, closed as u64)
            }
            _ => return,
        };
        let reply = Frame::Reply {
            request,
            outcome,
            count,
        };
        if let Err(err) = self.cluster.send(self.node_channel(from), reply) {
            tracing::warn!(error = %err, "cannot answer a backplane request");
        }
    }
}

#[async_trait]
impl Subscriber for Shared {
    async fn receive(&self, _channel: &str, origin: Origin, frame: Frame) {
        match frame {
            Frame::Reply {
                request,
                outcome,
                count,
            } => {
                let waiter = self.waiting.get(&request).map(|w| w.clone());
                if let Some(waiter) = waiter {
                    let _ = waiter.try_send((outcome, count));
                }
            }
            request @ (Frame::GroupChange { .. } | Frame::DisconnectUser { .. }) => {
                self.answer(&origin.node, request).await;
            }
            send => self.apply(send).await,
        }
    }
}

fn encode_connections(connections: &[ConnectionInfo]) -> String {
    let list: Vec<(&str, Option<&str>)> = connections
        .iter()
        .map(|c| (c.id.as_str(), c.message_session.as_deref()))
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

fn decode_connections(sub: &str, text: &str) -> Vec<ConnectionInfo> {
    serde_json::from_str::<Vec<(String, Option<String>)>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, message_session)| ConnectionInfo {
            id,
            sub: sub.to_string(),
            message_session,
        })
        .collect()
}

#[async_trait]
impl HubLifetimeManager for RedisLifetimeManager {
    async fn add_connection(&self, connection: Arc<Connection>) -> Result<(), LifetimeError> {
        self.inner.add_connection(connection).await?;
        self.shared.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn remove_connection(&self, connection: &Connection) {
        self.inner.remove_connection(connection).await;
        self.shared.dirty.store(true, Ordering::Relaxed);
    }

    async fn send_all(
        &self,
        message: Arc<SerializedHubMessage>,
        excluded: &[String],
    ) -> Result<(), LifetimeError> {
        self.inner.send_all(message.clone(), excluded).await?;
        let payload = payload(&message)?;
        self.enqueue(
            self.shared.all_channel.clone(),
            Frame::All {
                excluded: excluded.to_vec(),
                payload,
            },
        )
    }

    async fn send_connection(
        &self,
        connection_id: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError> {
        match self.remote_node(connection_id).await {
            None => self.inner.send_connection(connection_id, message).await,
            // Published whether or not the node is live as far as this one knows: that view
            // lags (by up to a heartbeat, and until this node first reads it after it starts),
            // and a node that is gone costs one publish nobody receives.
            Some(node) => self.enqueue(
                self.shared.node_channel(&node),
                Frame::Connection {
                    id: connection_id.to_string(),
                    payload: payload(&message)?,
                },
            ),
        }
    }

    async fn send_user(
        &self,
        sub: &str,
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError> {
        self.inner.send_user(sub, message.clone()).await?;
        self.enqueue(
            self.shared.all_channel.clone(),
            Frame::User {
                sub: sub.to_string(),
                payload: payload(&message)?,
            },
        )
    }

    async fn send_groups(
        &self,
        groups: &[String],
        message: Arc<SerializedHubMessage>,
    ) -> Result<(), LifetimeError> {
        self.inner.send_groups(groups, message.clone()).await?;
        self.enqueue(
            self.shared.all_channel.clone(),
            Frame::Groups {
                groups: groups.to_vec(),
                payload: payload(&message)?,
            },
        )
    }

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError> {
        self.change_group(connection_id, group, true).await
    }

    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        self.change_group(connection_id, group, false).await
    }

    async fn online(&self, subs: &[String]) -> Result<Vec<bool>, LifetimeError> {
        let mut online = self.inner.online(subs).await?;
        if subs.is_empty() {
            return Ok(online);
        }
        let remote: Vec<Vec<Option<String>>> = self
            .ask_others(|pipe, key| {
                pipe.cmd("HMGET").arg(key).arg(subs);
            })
            .await?;
        for node in remote {
            for (here, there) in online.iter_mut().zip(node) {
                *here |= there.is_some();
            }
        }
        Ok(online)
    }

    async fn connections_of(&self, sub: &str) -> Result<Vec<ConnectionInfo>, LifetimeError> {
        let mut connections = self.inner.connections_of(sub).await?;
        let remote: Vec<Option<String>> = self
            .ask_others(|pipe, key| {
                pipe.hget(key, sub);
            })
            .await?;
        for text in remote.into_iter().flatten() {
            connections.extend(decode_connections(sub, &text));
        }
        Ok(connections)
    }

    async fn disconnect_user(
        &self,
        sub: &str,
        reason: CloseReason,
    ) -> Result<usize, LifetimeError> {
        let local = self.inner.disconnect_user(sub, reason.clone()).await?;
        let remote_reason = match reason {
            CloseReason::Revoked(why) => Disconnect::Revoked(why),
            _ => Disconnect::Kicked,
        };
        let sub_owned = sub.to_string();
        // Every node that listens on the hub's channel answers, this one aside: published
        // whatever the live-node list says (it lags: a node that just started is not in it).
        let this = u64::from(self.shared.cluster.listens(&self.shared.all_channel));
        let mut others = 0;
        let answers = self
            .request(
                self.shared.all_channel.clone(),
                |request| Frame::DisconnectUser {
                    request,
                    sub: sub_owned,
                    reason: remote_reason,
                },
                |receivers| {
                    others = usize::try_from(receivers.saturating_sub(this)).unwrap_or(usize::MAX);
                    others
                },
                DISCONNECT_TIMEOUT,
            )
            .await;
        // The local connections are closed already: a count short of the other nodes' is
        // reported as such (counts fail soft; revocation fails closed on its own feed).
        let answers = match answers {
            Ok(answers) => answers.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot ask the other nodes to disconnect a user; the count may be short");
                Vec::new()
            }
        };
        if answers.len() < others {
            tracing::warn!(
                answered = answers.len(),
                nodes = others,
                "not every node answered a disconnect in time; the count may be short"
            );
        }
        let remote: u64 = answers.iter().map(|(_, count)| count).sum();
        Ok(local + usize::try_from(remote).unwrap_or(usize::MAX))
    }

    async fn connection_count(&self) -> Result<usize, LifetimeError> {
        let local = self.inner.connection_count().await?;
        let counts: Vec<Option<u64>> = self.of_others(Shared::count_key).await?;
        let remote: u64 = counts.into_iter().flatten().sum();
        Ok(local + usize::try_from(remote).unwrap_or(usize::MAX))
    }

    async fn connected_users(&self) -> Result<Vec<ConnectedUser>, LifetimeError> {
        let local = self.inner.connected_users().await?;
        let remote: Vec<Option<String>> = self.of_others(Shared::users_key).await?;
        let remote = remote
            .into_iter()
            .flatten()
            .flat_map(|text| serde_json::from_str::<Vec<ConnectedUser>>(&text).unwrap_or_default());
        Ok(first_listed(local.into_iter().chain(remote)))
    }

    async fn user_count(&self) -> Result<usize, LifetimeError> {
        let mut subs: HashSet<String> = self
            .inner
            .presence()
            .into_iter()
            .map(|(sub, _)| sub)
            .collect();
        let remote: Vec<Vec<String>> = self
            .ask_others(|pipe, key| {
                pipe.hkeys(key);
            })
            .await?;
        subs.extend(remote.into_iter().flatten());
        Ok(subs.len())
    }
}
