//! Several nodes on one Redis (`[cluster]`): real Signet servers in this process, each with its
//! own data directory, sharing the test Redis of [`crate::redis_server`] under a channel
//! prefix of the test's own; and the Redis lifetime manager driven directly, for what no hub
//! method exposes (groups, sends to one connection, exclusions, gaps).

use crate::helpers::user_token;
use crate::redis_server::{prefix, shared, RedisServer};
use crate::user_limits::{device, login, message_key, send_command, signed, ENVELOPE_SECRET};
use crate::ws_client::{admin_token, spawn_hub, HubServer, RawClient};
use serde_json::{json, Value};
use signet::cluster::{wire, Cluster, RedisLifetimeManager};
use signet::connection::{CloseReason, Connection, ConnectionRegistry};
use signet::hub::{HubLifetimeManager, InProcessLifetimeManager};
use signet::metrics::Metrics;
use signet::protocol::{HubMessage, HubProtocol, SerializedHubMessage};
use signet::settings::ClusterSettings;
use signet::LifetimeError;
use signet::Principal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Within this, what one node does is seen by the others (presence is written within 250 ms).
pub(crate) const SPREAD: Duration = Duration::from_secs(5);

/// A node with its own SQLite store, joined to the cluster.
pub(crate) async fn node(redis_url: &str, prefix: &str, id: &str) -> HubServer {
    joined(unjoined(redis_url, prefix, id).await).await
}

/// A node started, not waited for.
pub(crate) async fn unjoined(redis_url: &str, prefix: &str, id: &str) -> HubServer {
    spawn_hub(&[
        ("SIGNET__CLUSTER__REDIS_URL", redis_url),
        ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix),
        ("SIGNET__CLUSTER__NODE_ID", id),
    ])
    .await
}

/// Waits until `server` works with the cluster: its channels subscribed and the revocations of
/// other nodes reaching it (until then it refuses tokens).
pub(crate) async fn joined(server: HubServer) -> HubServer {
    crate::helpers::eventually(SPREAD, "the node to join the cluster", || {
        server
            .state
            .cluster
            .as_ref()
            .is_some_and(|c| c.subscribed())
            && server.state.auth.revocations().in_sync()
    })
    .await;
    server
}

/// Calls `method` on `client` until its result is `want`, failing after [`SPREAD`].
async fn eventually(client: &mut RawClient, method: &str, want: Value) {
    let deadline = tokio::time::Instant::now() + SPREAD;
    let mut n = 0;
    loop {
        n += 1;
        let completion = client.call(&format!("ask-{n}"), method, json!([])).await;
        if completion["result"] == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{method} answered {completion}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next `SystemMessage` invocation's text.
pub(crate) async fn system_message(client: &mut RawClient) -> Value {
    loop {
        let message = client.next_message(SPREAD).await;
        if message["target"] == "SystemMessage" {
            return message["arguments"][0].clone();
        }
    }
}

#[actix_web::test]
async fn broadcasts_counts_and_kicks_reach_every_node() {
    let redis = shared();
    let prefix = prefix("hub");
    let a = node(&redis.url(), &prefix, "node-a").await;
    let b = node(&redis.url(), &prefix, "node-b").await;
    let mut admin = a.open(&admin_token("the-admin")).await;
    let mut alice_a = a.open(&user_token("alice")).await;
    let mut alice_b = b.open(&user_token("alice")).await;
    let mut bob_b = b.open(&user_token("bob")).await;

    // Presence is cluster-wide: three users, whichever node they are on.
    eventually(&mut admin, "GetConnectedUsersCount", json!(3)).await;

    let done = admin
        .call("b1", "BroadcastMessage", json!(["to every node"]))
        .await;
    assert!(done.get("error").is_none(), "{done}");
    for client in [&mut alice_a, &mut alice_b, &mut bob_b] {
        assert_eq!(system_message(client).await, "to every node");
    }
    // The sender's node does not deliver a second copy (its own publish comes back to it).
    admin.expect_silence(Duration::from_millis(300)).await;

    // A kick closes the user on both nodes and counts both connections.
    let closed = admin.call("k1", "DisconnectUser", json!(["alice"])).await;
    assert_eq!(closed["result"], json!(2), "{closed}");
    for client in [&mut alice_a, &mut alice_b] {
        let ending = client.expect_close(SPREAD).await;
        let message = ending.close_message.expect("a Close message");
        assert_eq!(message["error"], "Disconnected by an administrator");
    }
    bob_b.assert_echo("still here").await;
    eventually(&mut admin, "GetConnectedUsersCount", json!(2)).await;

    // A node that leaves drops out of the counts.
    b.trigger.cancel();
    eventually(&mut admin, "GetConnectedUsersCount", json!(1)).await;
}

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

/// One node's backplane for hub `home`, without an HTTP server.
struct Node {
    cluster: Arc<Cluster>,
    hub: RedisLifetimeManager,
    registry: Arc<ConnectionRegistry>,
    shutdown: CancellationToken,
}

impl Node {
    fn start(redis_url: &str, prefix: &str, id: &str, max_groups: usize) -> Node {
        let settings = ClusterSettings {
            channel_prefix: prefix.to_string(),
            ..ClusterSettings::default()
        };
        let shutdown = CancellationToken::new();
        let cluster = Cluster::start(
            &settings,
            redis_url,
            id.to_string(),
            &Metrics::new(),
            shutdown.clone(),
        )
        .expect("cluster starts");
        let registry = Arc::new(ConnectionRegistry::new(100, 100));
        let local = Arc::new(InProcessLifetimeManager::new(max_groups, registry.clone()));
        let hub = RedisLifetimeManager::start(cluster.clone(), "home", local, shutdown.clone());
        Node {
            cluster,
            hub,
            registry,
            shutdown,
        }
    }

    async fn connect(&self, n: u32, sub: &str, protocol: HubProtocol) -> Arc<Connection> {
        let id = format!("{}.{n}", self.cluster.node_id());
        let connection = Connection::new(
            id.clone(),
            format!("token-{id}"),
            Arc::from("home"),
            principal(sub),
            64,
            &self.shutdown,
        );
        connection.set_protocol(protocol);
        self.registry.insert(connection.clone()).expect("room");
        self.hub.add_connection(connection.clone()).await.unwrap();
        connection
    }

    /// Waits until this node's subscriptions are confirmed, polling often: the tests of a node
    /// that just started act before its first heartbeat reaches Redis.
    async fn subscribed(&self) {
        let deadline = tokio::time::Instant::now() + SPREAD;
        while !self.cluster.subscribed() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never subscribed",
                self.cluster.node_id()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until this node sees `sub` online (so both nodes see each other).
    async fn sees(&self, sub: &str) {
        let deadline = tokio::time::Instant::now() + SPREAD;
        while !self.cluster.subscribed()
            || self.hub.online(&[sub.to_string()]).await.ok() != Some(vec![true])
        {
            assert!(tokio::time::Instant::now() < deadline, "{sub} never online");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn message(text: &str) -> Arc<SerializedHubMessage> {
    Arc::new(SerializedHubMessage::new(HubMessage::invocation(
        "SystemMessage",
        vec![json!(text)],
    )))
}

/// Waits until each connection's queue holds the frames given (sends to other nodes arrive
/// asynchronously), then a little longer to see that no more come.
async fn queued(expect: &[(&Arc<Connection>, usize)]) {
    let deadline = tokio::time::Instant::now() + SPREAD;
    while expect.iter().any(|(c, n)| c.queue_depth() < *n) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queued {:?}, expected {:?}",
            expect
                .iter()
                .map(|(c, _)| c.queue_depth())
                .collect::<Vec<_>>(),
            expect.iter().map(|(_, n)| *n).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got: Vec<usize> = expect.iter().map(|(c, _)| c.queue_depth()).collect();
    let want: Vec<usize> = expect.iter().map(|(_, n)| *n).collect();
    assert_eq!(got, want);
}

#[actix_web::test]
async fn groups_single_connections_exclusions_and_presence_span_nodes() {
    let redis = shared();
    let prefix = prefix("lifetime");
    let a = Node::start(&redis.url(), &prefix, "a", 2);
    let b = Node::start(&redis.url(), &prefix, "b", 2);
    let alice = a.connect(1, "alice", HubProtocol::Json).await;
    let bob = b.connect(1, "bob", HubProtocol::Json).await;
    let bob_binary = b.connect(2, "bob", HubProtocol::MessagePack).await;
    let carol = b.connect(3, "carol", HubProtocol::Json).await;
    a.sees("carol").await;
    b.sees("alice").await;

    // Groups: A adds B's connections, acknowledged by B, and the group spans both nodes.
    a.hub.add_to_group(&bob.id, "kitchen").await.unwrap();
    a.hub.add_to_group(&alice.id, "kitchen").await.unwrap();
    b.hub.add_to_group(&carol.id, "garden").await.unwrap();
    a.hub
        .send_groups(&["kitchen".into(), "garden".into()], message("g"))
        .await
        .unwrap();
    queued(&[(&alice, 1), (&bob, 1), (&bob_binary, 0), (&carol, 1)]).await;
    // B's limit of two groups holds for a request from A.
    a.hub.add_to_group(&carol.id, "hall").await.unwrap();
    assert_eq!(
        a.hub.add_to_group(&carol.id, "attic").await,
        Err(LifetimeError::TooManyGroups(2))
    );
    a.hub.remove_from_group(&bob.id, "kitchen").await.unwrap();
    // A connection that exists nowhere: its node answers, or its node is not live at all.
    let started = tokio::time::Instant::now();
    assert_eq!(
        a.hub.add_to_group("b.nobody", "kitchen").await,
        Err(LifetimeError::UnknownConnection("b.nobody".into()))
    );
    assert_eq!(
        a.hub.add_to_group("z.gone", "kitchen").await,
        Err(LifetimeError::UnknownConnection("z.gone".into()))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    a.hub
        .send_groups(&["kitchen".into()], message("k"))
        .await
        .unwrap();
    queued(&[(&alice, 2), (&bob, 1), (&carol, 1)]).await;

    // To one connection on the other node; to all but the excluded; to a user everywhere.
    a.hub
        .send_connection(&bob_binary.id, message("c"))
        .await
        .unwrap();
    queued(&[(&bob, 1), (&bob_binary, 1), (&carol, 1)]).await;
    a.hub
        .send_all(message("all"), &[bob.id.clone(), alice.id.clone()])
        .await
        .unwrap();
    queued(&[(&alice, 2), (&bob, 1), (&bob_binary, 2), (&carol, 2)]).await;
    b.hub.send_user("alice", message("u")).await.unwrap();
    queued(&[(&alice, 3), (&bob, 1)]).await;

    // Presence and counts are cluster-wide.
    let online = a
        .hub
        .online(&["bob".into(), "dave".into(), "alice".into()])
        .await
        .unwrap();
    assert_eq!(online, vec![true, false, true]);
    let of_bob = a.hub.connections_of("bob").await.unwrap();
    assert_eq!(of_bob.len(), 2, "{of_bob:?}");
    assert!(of_bob
        .iter()
        .all(|c| c.message_session.as_deref() == Some("sid-bob")));
    assert_eq!(a.hub.connection_count().await.unwrap(), 4);
    assert_eq!(a.hub.user_count().await.unwrap(), 3);

    // A kick from A closes bob's connections on B and counts them.
    assert_eq!(
        a.hub
            .disconnect_user("bob", CloseReason::Kicked)
            .await
            .unwrap(),
        2
    );
    assert_eq!(bob.close_reason(), Some(&CloseReason::Kicked));
    assert!(!carol.is_closed());
}

/// A node that just started is not yet in the others' lists of live nodes (it beats its first
/// heartbeat on the presence tick after its channels are subscribed, and they reread the list
/// every 250 ms); a group change for its connection must reach it all the same.
#[actix_web::test]
async fn a_group_change_reaches_a_node_that_just_started() {
    let redis = shared();
    let prefix = prefix("new-node-groups");
    let a = Node::start(&redis.url(), &prefix, "a", 4);
    let alice = a.connect(1, "alice", HubProtocol::Json).await;
    a.sees("alice").await;
    // Rounds until one changes the group before the new node's first heartbeat is even in
    // Redis (so A cannot know it); each round must succeed.
    let mut before_heartbeat = 0;
    for round in 0..5 {
        let id = format!("new{round}");
        let b = Node::start(&redis.url(), &prefix, &id, 4);
        b.subscribed().await;
        let bob = b.connect(1, "bob", HubProtocol::Json).await;
        let heartbeat = redis.command(&format!("ZSCORE {prefix}:home:nodes {id}"));
        a.hub.add_to_group(&bob.id, "kitchen").await.unwrap();
        a.hub.add_to_group(&bob.id, "hall").await.unwrap();
        a.hub.remove_from_group(&bob.id, "hall").await.unwrap();
        if heartbeat.starts_with("$-1") {
            before_heartbeat += 1;
        }
        a.hub
            .send_groups(&["kitchen".into()], message("k"))
            .await
            .unwrap();
        a.hub
            .send_groups(&["hall".into()], message("h"))
            .await
            .unwrap();
        queued(&[(&bob, 1), (&alice, 0)]).await;
        if before_heartbeat >= 2 {
            break;
        }
    }
    assert!(
        before_heartbeat > 0,
        "every new node beat before the group change; the test proved nothing"
    );
}

/// As a group change, a kick reaches a node that just started, and counts its connections, though
/// the kicking node knows no other node yet; alone, it answers at once.
#[actix_web::test]
async fn a_kick_reaches_a_node_that_just_started() {
    let redis = shared();
    let prefix = prefix("new-node-kick");
    let a = Node::start(&redis.url(), &prefix, "a", 4);
    let alice = a.connect(1, "alice", HubProtocol::Json).await;
    a.sees("alice").await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        a.hub
            .disconnect_user("bob", CloseReason::Kicked)
            .await
            .unwrap(),
        0
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let mut before_heartbeat = 0;
    for round in 0..5 {
        let id = format!("new{round}");
        let b = Node::start(&redis.url(), &prefix, &id, 4);
        b.subscribed().await;
        let bob = b.connect(1, "bob", HubProtocol::Json).await;
        let bob_again = b.connect(2, "bob", HubProtocol::MessagePack).await;
        let heartbeat = redis.command(&format!("ZSCORE {prefix}:home:nodes {id}"));
        let closed = a
            .hub
            .disconnect_user("bob", CloseReason::Kicked)
            .await
            .unwrap();
        if heartbeat.starts_with("$-1") {
            before_heartbeat += 1;
        }
        assert_eq!(closed, 2);
        assert_eq!(bob.close_reason(), Some(&CloseReason::Kicked));
        assert_eq!(bob_again.close_reason(), Some(&CloseReason::Kicked));
        assert!(!alice.is_closed());
        if before_heartbeat >= 2 {
            break;
        }
    }
    assert!(
        before_heartbeat > 0,
        "every new node beat before the kick; the test proved nothing"
    );
}

#[actix_web::test]
async fn a_lost_message_is_counted_as_a_gap() {
    let redis = shared();
    let prefix = prefix("gaps");
    let a = Node::start(&redis.url(), &prefix, "a", 4);
    let listener = a.connect(1, "alice", HubProtocol::Json).await;
    a.sees("alice").await;
    // A node "x" whose messages 1 and 4 arrive: 2 and 3 were lost.
    let frame = |sequence| {
        let json = message("x").bytes(HubProtocol::Json).unwrap();
        let msgpack = message("x").bytes(HubProtocol::MessagePack).unwrap();
        wire::encode(
            &wire::Origin {
                node: "x".into(),
                epoch: 1,
                sequence,
            },
            &wire::Frame::All {
                excluded: vec![],
                payload: wire::Payload { json, msgpack },
            },
        )
    };
    let channel = format!("{prefix}:home:all");
    for sequence in [1, 4] {
        let mut commands = a.cluster.commands();
        let _: () = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(frame(sequence).as_ref())
            .query_async(&mut commands)
            .await
            .unwrap();
    }
    queued(&[(&listener, 2)]).await;
    assert_eq!(a.cluster.stats().gaps.load(Ordering::Relaxed), 2);
}

/// A joined node with the test envelope secret and `extra` settings.
async fn signing_node(url: &str, prefix: &str, id: &str, extra: &[(&str, &str)]) -> HubServer {
    let mut env = vec![
        ("SIGNET__CLUSTER__REDIS_URL", url),
        ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix),
        ("SIGNET__CLUSTER__NODE_ID", id),
        ("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET),
    ];
    env.extend_from_slice(extra);
    joined(spawn_hub(&env).await).await
}

#[actix_web::test]
async fn a_nonce_is_used_once_across_nodes_and_signed_calls_fail_closed_without_redis() {
    // A Redis of this test's own: it is stopped mid-test.
    let redis = RedisServer::start();
    let prefix = prefix("nonces");
    let a = signing_node(&redis.url(), &prefix, "a", &[]).await;
    let b = signing_node(&redis.url(), &prefix, "b", &[]).await;
    let token = user_token("signer");
    let key = message_key(&token);
    let mut on_a = a.open(&token).await;
    let mut on_b = b.open(&token).await;

    let envelope = signed(&key, "EchoSigned", &json!({"n": 1}));
    // A forgery carrying the same nonce, tried first on B, burns nothing.
    let mut forged = envelope.clone();
    forged[0]["message"] = json!("{\"n\":2}");
    assert_eq!(
        on_b.call_error("f", "EchoSigned", forged).await,
        "Failed to invoke 'EchoSigned': envelope rejected (bad_signature)"
    );
    let accepted = on_a.call("1", "EchoSigned", envelope.clone()).await;
    assert_eq!(accepted["result"], json!({"n": 1}), "{accepted}");
    assert_eq!(
        on_b.call_error("2", "EchoSigned", envelope).await,
        "Failed to invoke 'EchoSigned': envelope rejected (replayed_nonce)"
    );

    // Without Redis signed calls are refused, unsigned ones still answer.
    redis.stop();
    assert_eq!(
        on_a.call_error(
            "3",
            "EchoSigned",
            signed(&key, "EchoSigned", &json!({"n": 3}))
        )
        .await,
        "Failed to invoke 'EchoSigned': envelope rejected (replay_check_unavailable)"
    );
    on_a.assert_echo("unsigned still works").await;
    on_b.assert_echo("here too").await;

    // Redis back: signed calls work again.
    redis.restart();
    let deadline = tokio::time::Instant::now() + SPREAD;
    let mut n = 10;
    loop {
        n += 1;
        let completion = on_b
            .call(
                &n.to_string(),
                "EchoSigned",
                signed(&key, "EchoSigned", &json!({"n": n})),
            )
            .await;
        if completion["result"] == json!({"n": n}) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "signed calls still refused after Redis returned: {completion}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two nodes `a` and `b` for the home flows: the shared Redis, a fresh PostgreSQL database for
/// users and devices, the test envelope secret, and `extra` settings.
async fn home_nodes(test: &str, extra: &[(&str, &str)]) -> (HubServer, HubServer) {
    let prefix = prefix(test);
    let (url, db) = (shared().url(), crate::postgres::fresh_database().await);
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let mut env = vec![
            ("SIGNET__CLUSTER__REDIS_URL", url.as_str()),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix.as_str()),
            ("SIGNET__CLUSTER__NODE_ID", id),
            ("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET),
            ("SIGNET__STORE__URL", db.as_str()),
            ("SIGNET__STORE__MAX_CONNECTIONS", "4"),
        ];
        env.extend_from_slice(extra);
        nodes.push(joined(spawn_hub(&env).await).await);
    }
    let b = nodes.pop().expect("two nodes");
    let a = nodes.pop().expect("two nodes");
    (a, b)
}

#[actix_web::test]
async fn a_devices_telemetry_reaches_its_owner_on_another_node() {
    let (a, b) = home_nodes("telemetry", &[]).await;
    let owner = login(&a, "owner").await;
    let (device_id, device_token) = device(&b, &owner, "thermometer").await;
    let mut watcher = a.open(&owner).await;
    watcher
        .invoke_stream("watch", "StreamTelemetry", json!([]))
        .await;
    let mut thermometer = b.open(&device_token).await;
    // Both nodes show themselves (so both listen): B counts A's user, A its device.
    let mut admin = b.open(&admin_token("the-admin")).await;
    eventually(&mut admin, "GetConnectedUsersCount", json!(3)).await;
    let deadline = tokio::time::Instant::now() + SPREAD;
    loop {
        let listed = watcher.call("list", "ListDevices", json!([])).await;
        if listed["result"][0]["online"] == json!(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let key = message_key(&device_token);
    let reported = thermometer
        .call(
            "t1",
            "ReportTelemetry",
            signed(
                &key,
                "ReportTelemetry",
                &json!({"kind": "temperature", "data": 21.5}),
            ),
        )
        .await;
    assert!(reported.get("error").is_none(), "{reported}");
    // The owner on A gets the Telemetry invocation and the StreamTelemetry item.
    let (mut invoked, mut streamed) = (false, false);
    while !(invoked && streamed) {
        let message = watcher.next_message(SPREAD).await;
        let payload = if message["target"] == "Telemetry" {
            invoked = true;
            message["arguments"][0].clone()
        } else if message["invocationId"] == "watch" && message["type"] == 2 {
            streamed = true;
            message["item"].clone()
        } else {
            continue;
        };
        assert_eq!(payload["deviceId"], json!(device_id), "{payload}");
        assert_eq!(payload["data"], json!(21.5), "{payload}");
    }
}

#[actix_web::test]
async fn a_command_from_node_a_is_answered_once_from_node_b() {
    let (a, b) = home_nodes(
        "commands",
        &[("SIGNET__HOME__MAX_PENDING_COMMANDS_PER_USER", "2")],
    )
    .await;
    let owner = login(&a, "commander").await;
    let owner_key = message_key(&owner);
    let (device_id, device_token) = device(&b, &owner, "lamp").await;
    let mut user = a.open(&owner).await;
    let mut lamp = b.open(&device_token).await;
    let mut admin = b.open(&admin_token("the-admin")).await;
    eventually(&mut admin, "GetConnectedUsersCount", json!(3)).await;
    let deadline = tokio::time::Instant::now() + SPREAD;
    let sent = loop {
        let sent = send_command(&mut user, &owner_key, "c1", &device_id).await;
        if sent["result"]["commandId"].is_string() || tokio::time::Instant::now() > deadline {
            break sent;
        }
        // A has not seen the device's presence yet ("device offline").
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let command_id = sent["result"]["commandId"].clone();
    assert!(command_id.is_string(), "{sent}");

    // The device on B gets the server-signed Command and answers there.
    let command = lamp.next_message(SPREAD).await;
    assert_eq!(command["target"], "Command", "{command}");
    let inner: Value =
        serde_json::from_str(command["arguments"][0]["message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["commandId"], command_id);
    let device_key = message_key(&device_token);
    let result = json!({"commandId": command_id, "status": "ok"});
    let answered = lamp
        .call(
            "r1",
            "CommandResult",
            signed(&device_key, "CommandResult", &result),
        )
        .await;
    assert!(answered.get("error").is_none(), "{answered}");
    // The issuer on A gets it; a second answer is refused on either node.
    loop {
        let message = user.next_message(SPREAD).await;
        if message["target"] == "CommandResult" {
            assert_eq!(message["arguments"][0]["commandId"], command_id);
            assert_eq!(message["arguments"][0]["deviceId"], json!(device_id));
            break;
        }
    }
    let again = lamp
        .call_error(
            "r2",
            "CommandResult",
            signed(&device_key, "CommandResult", &result),
        )
        .await;
    assert!(again.ends_with("unknown command"), "{again}");

    // The per-user cap counts the cluster's commands: two wait, the third is refused on B too.
    let mut user_b = b.open(&owner).await;
    for (client, id) in [(&mut user, "c2"), (&mut user_b, "c3")] {
        let sent = send_command(client, &owner_key, id, &device_id).await;
        assert!(sent["result"]["commandId"].is_string(), "{sent}");
    }
    let refused = send_command(&mut user_b, &owner_key, "c4", &device_id).await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many commands waiting")),
        "{refused}"
    );
}

/// Sends from `from` until `to` receives one, within `within`; how long it took.
async fn delivered_after(from: &Node, to: &Arc<Connection>, within: Duration) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    let before = to.queue_depth();
    while started.elapsed() < within {
        let _ = from.hub.send_user(&to.principal().sub, message("m")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if to.queue_depth() > before {
            return Some(started.elapsed());
        }
    }
    None
}

#[actix_web::test]
async fn the_backplane_comes_back_after_redis_restarts_and_pubsub_clients_are_killed() {
    let redis = RedisServer::start();
    let prefix = prefix("outage");
    let a = Node::start(&redis.url(), &prefix, "a", 4);
    let b = Node::start(&redis.url(), &prefix, "b", 4);
    let on_b = b.connect(1, "bob", HubProtocol::Json).await;
    a.connect(1, "alice", HubProtocol::Json).await;
    a.sees("bob").await;
    b.sees("alice").await;
    assert!(delivered_after(&a, &on_b, SPREAD).await.is_some());

    // Redis dies and comes back empty: each node resubscribes within 2 s (about 0.1 s here)
    // and shows itself again.
    redis.restart();
    let took = delivered_after(&a, &on_b, Duration::from_secs(2)).await;
    assert!(took.is_some(), "nothing reached B after Redis restarted");
    a.sees("bob").await;
    assert!(b.cluster.stats().reconnects.load(Ordering::Relaxed) >= 1);

    // Redis drops every subscriber connection.
    let killed = redis.command("CLIENT KILL TYPE pubsub");
    assert!(killed.starts_with(':'), "{killed}");
    let took = delivered_after(&a, &on_b, Duration::from_secs(2)).await;
    assert!(
        took.is_some(),
        "nothing reached B after its subscription was killed"
    );
    assert!(on_b.queue_depth() > 0);
}

/// `GET /readyz`: the status and the body.
pub(crate) async fn readyz(server: &HubServer) -> (u16, Value) {
    let mut response = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("answered");
    let body = response.json().await.unwrap_or(Value::Null);
    (response.status().as_u16(), body)
}

#[actix_web::test]
async fn a_node_starts_without_redis_is_not_ready_and_becomes_ready_when_redis_comes() {
    let redis = RedisServer::start();
    redis.stop();
    let node = unjoined(&redis.url(), &prefix("ready"), "lonely").await;
    let (status, body) = readyz(&node).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], json!(["revocations", "redis"]), "{body}");
    // Fail closed: other nodes' revocations cannot reach it, so tokens are refused.
    let token = user_token("early");
    let refused = node
        .negotiate("?negotiateVersion=1", Some(&token), None)
        .await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "store_unavailable");
    // Every 503 says when to retry.
    assert_eq!(
        refused.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let probe = node
        .http
        .get(node.url("/readyz"))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(probe.status().as_u16(), 503);
    assert_eq!(
        probe.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    redis.restart();
    let deadline = tokio::time::Instant::now() + SPREAD;
    loop {
        let (status, body) = readyz(&node).await;
        if status == 200 {
            assert_eq!(body["checks"], json!({"store": "ok", "redis": "ok"}));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = node.open(&token).await;
    client.assert_echo("served once in sync").await;
}

#[actix_web::test]
async fn a_sessions_nonce_quota_counts_its_nonces_on_every_node() {
    let redis = shared();
    let prefix = prefix("quota");
    let quota = [("SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION", "3")];
    let a = signing_node(&redis.url(), &prefix, "a", &quota).await;
    let b = signing_node(&redis.url(), &prefix, "b", &quota).await;
    let token = user_token("busy-signer");
    let key = message_key(&token);
    let mut on_a = a.open(&token).await;
    let mut on_b = b.open(&token).await;
    let sign = |n: u32| signed(&key, "EchoSigned", &json!({ "n": n }));
    for (client, n) in [(&mut on_a, 1), (&mut on_b, 2)] {
        let accepted = client.call(&n.to_string(), "EchoSigned", sign(n)).await;
        assert_eq!(accepted["result"], json!({ "n": n }), "{accepted}");
    }
    // A forgery takes no slot: the third signed call still fits.
    let mut forged = sign(3);
    forged[0]["message"] = json!("{\"n\":4}");
    assert_eq!(
        on_b.call_error("f", "EchoSigned", forged).await,
        "Failed to invoke 'EchoSigned': envelope rejected (bad_signature)"
    );
    let third = on_a.call("3", "EchoSigned", sign(3)).await;
    assert_eq!(third["result"], json!({ "n": 3 }), "{third}");
    // Three nonces live across both nodes: the fourth is refused on either.
    for (client, n) in [(&mut on_b, 4), (&mut on_a, 5)] {
        assert_eq!(
            client
                .call_error(&n.to_string(), "EchoSigned", sign(n))
                .await,
            "Failed to invoke 'EchoSigned': envelope rejected (nonce_quota_exceeded)"
        );
    }
    // Another session is unaffected.
    let other = user_token("calm-signer");
    let other_key = message_key(&other);
    let mut calm = b.open(&other).await;
    let fine = calm
        .call(
            "c",
            "EchoSigned",
            signed(&other_key, "EchoSigned", &json!("mine")),
        )
        .await;
    assert_eq!(fine["result"], json!("mine"), "{fine}");
}

/// A user token carrying a display name.
fn named_token(sub: &str, name: &str, roles: &[&str]) -> String {
    use crate::helpers::{claims, kid_of, sign_hs, TEST_SECRET};
    let mut c = claims(sub);
    c["name"] = json!(name);
    c["roles"] = json!(roles);
    let kid = kid_of(TEST_SECRET);
    sign_hs(TEST_SECRET, Some(&kid), jsonwebtoken::Algorithm::HS256, &c)
}

/// A Signet process of its own (`signet serve`), to kill: a node of the cluster on `port`.
struct NodeProcess {
    child: std::process::Child,
    port: u16,
    _data_dir: tempfile::TempDir,
}

impl NodeProcess {
    async fn start(redis_url: &str, prefix: &str, id: &str) -> NodeProcess {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let config = data_dir.path().join("signet.toml");
        std::fs::write(&config, "").expect("config written");
        let port = crate::watchdog::free_port().expect("a free port");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_signet"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("SIGNET__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("SIGNET__SERVER__DATA_DIR", data_dir.path())
            .env("SIGNET__JWT__SECRET", crate::helpers::TEST_SECRET)
            .env("SIGNET__CLUSTER__REDIS_URL", redis_url)
            .env("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix)
            .env("SIGNET__CLUSTER__NODE_ID", id)
            .env("SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB", "64")
            .env("SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS", "1")
            .env("SIGNET__LOG__LEVEL", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("signet serve runs");
        let node = NodeProcess {
            child,
            port,
            _data_dir: data_dir,
        };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let http = awc::Client::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = http.get(&ready).send().await {
                if answer.status().as_u16() == 200 {
                    return node;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn open(&self, token: &str) -> RawClient {
        let (_, io) = awc::Client::new()
            .ws(format!("http://127.0.0.1:{}/hubs/home", self.port))
            .bearer_auth(token)
            .connect()
            .await
            .expect("websocket upgrade accepted");
        let mut client = RawClient::from_socket(io);
        client.handshake().await;
        client
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn connected_users_are_listed_across_nodes_and_a_killed_node_drops_out() {
    let redis = shared();
    let prefix = prefix("listed");
    let a = node(&redis.url(), &prefix, "a").await;
    let mut b = NodeProcess::start(&redis.url(), &prefix, "b").await;
    let admin_token = named_token("the-admin", "Admin", &["admin"]);
    let alice = named_token("alice", "alice", &["user"]);
    let bob = named_token("bob", "Bob", &["user"]);
    let mut admin = a.open(&admin_token).await;
    let _alice_a = a.open(&alice).await;
    let _alice_b = b.open(&alice).await;
    let _bob_b = b.open(&bob).await;
    let bob_b2 = b.open(&bob).await;
    let entry = |sub: &str, name: &str, role: &str, n: u32| json!({"sub": sub, "name": name, "roles": [role], "connections": n});

    // Both nodes' users, merged by user and sorted by name (case-insensitive).
    let both = json!([
        entry("the-admin", "Admin", "admin", 1),
        entry("alice", "alice", "user", 2),
        entry("bob", "Bob", "user", 2),
    ]);
    eventually(&mut admin, "ListConnectedUsers", both).await;
    eventually(&mut admin, "GetConnectedUsersCount", json!(3)).await;
    // A change on B shows within the staleness bound.
    bob_b2.close().await;
    let fewer = json!([
        entry("the-admin", "Admin", "admin", 1),
        entry("alice", "alice", "user", 2),
        entry("bob", "Bob", "user", 1),
    ]);
    eventually(&mut admin, "ListConnectedUsers", fewer).await;

    // B is killed (no goodbye): within 10 s it is out of the list and the counts.
    let killed = std::time::Instant::now();
    b.child.kill().expect("killed");
    let _ = b.child.wait();
    let alone = json!([
        entry("the-admin", "Admin", "admin", 1),
        entry("alice", "alice", "user", 1),
    ]);
    let deadline = Duration::from_secs(10);
    loop {
        let listed = admin.call("l", "ListConnectedUsers", json!([])).await;
        let count = admin.call("c", "GetConnectedUsersCount", json!([])).await;
        if listed["result"] == alone && count["result"] == json!(2) {
            break;
        }
        assert!(killed.elapsed() < deadline, "{listed} {count}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("a killed node dropped out after {:?}", killed.elapsed());
}

/// The value of `signet_cluster_forward_failures_total{kind}` on `server`.
fn forward_failures(server: &HubServer, kind: &str) -> u64 {
    crate::sticky::forward_counter(server, "forward_failures", kind)
}

/// Node A in this process, whose forwarded polls wait for their owner's answer up to the poll
/// timeout plus 10 s (here 70 s), and node B, a process of its own, to kill.
async fn forwarding_pair(test: &str) -> (HubServer, NodeProcess) {
    let redis = shared();
    let prefix = prefix(test);
    let a = joined(
        spawn_hub(&[
            ("SIGNET__CLUSTER__REDIS_URL", redis.url().as_str()),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix.as_str()),
            ("SIGNET__CLUSTER__NODE_ID", "a"),
            ("SIGNET__TRANSPORTS__POLL_TIMEOUT_SECS", "60"),
        ])
        .await,
    )
    .await;
    let b = NodeProcess::start(&redis.url(), &prefix, "b").await;
    (a, b)
}

impl NodeProcess {
    /// A long-polling connection of `bearer`'s on this node (negotiated, first poll done): its
    /// connection token.
    async fn polling_connection(&self, bearer: &str) -> String {
        let http = awc::Client::default();
        let url = |path: &str| format!("http://127.0.0.1:{}/hubs/home{path}", self.port);
        let mut negotiated = http
            .post(url("/negotiate?negotiateVersion=1"))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("negotiated");
        let negotiated: Value = negotiated.json().await.expect("negotiate's JSON");
        let token = negotiated["connectionToken"]
            .as_str()
            .expect("a connection token")
            .to_string();
        let first = http
            .get(url(&format!("?id={token}")))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("the first poll");
        assert_eq!(first.status().as_u16(), 200);
        token
    }

    /// Backplane messages this node received (`signet_cluster_receives`).
    async fn receives(&self) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let mut answer = awc::Client::default()
            .get(url)
            .bearer_auth(admin_token("metrics"))
            .send()
            .await
            .expect("metrics");
        let text = answer.body().await.expect("the metrics");
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|line| line.strip_prefix("signet_cluster_receives "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Kills node `id` of the cluster on `prefix` (no goodbye) and waits until Redis has
    /// dropped its subscriptions.
    async fn kill(&mut self, prefix: &str, id: &str) {
        self.child.kill().expect("killed");
        let _ = self.child.wait();
        let listening = format!("PUBSUB NUMSUB {prefix}:forward:{id}");
        crate::helpers::eventually(SPREAD, "Redis to drop the node's subscriptions", || {
            shared().command(&listening).ends_with(":0\r\n")
        })
        .await;
    }
}

/// A poll on `server` for `token`, answered within 30 s (a forwarded one could wait 70 s).
async fn poll_status(server: &HubServer, token: &str, bearer: &str) -> (u16, Value) {
    let mut answer = server
        .http
        .get(server.url(&format!("/hubs/home?id={token}")))
        .bearer_auth(bearer)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("answered before the forward timeout");
    let body = answer.json().await.unwrap_or(Value::Null);
    (answer.status().as_u16(), body)
}

#[actix_web::test]
async fn a_request_forwarded_to_a_killed_node_is_answered_at_once_as_unknown() {
    let (a, mut b) = forwarding_pair("forward-killed").await;
    let alice = user_token("alice");
    let token = b.polling_connection(&alice).await;
    b.kill(&a.state.settings.cluster.channel_prefix, "b").await;

    // A poll on A for B's connection is not left waiting 70 s: no one received it, so it is
    // answered at once, as for a connection nobody holds.
    let failures = forward_failures(&a, "poll");
    let (status, body) = poll_status(&a, &token, &alice).await;
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("unknown_connection"))
    );
    assert_eq!(forward_failures(&a, "poll"), failures + 1);
}

#[actix_web::test]
async fn a_forwarded_poll_ends_soon_after_the_node_serving_it_is_killed() {
    let (a, mut b) = forwarding_pair("forward-killed-waiting").await;
    let alice = user_token("alice");
    let token = b.polling_connection(&alice).await;

    // B holds the forwarded poll (nothing to deliver for a minute) when it is killed.
    let (received, failures) = (b.receives().await, forward_failures(&a, "poll"));
    let prefix = a.state.settings.cluster.channel_prefix.clone();
    let killed = async {
        let deadline = tokio::time::Instant::now() + SPREAD;
        while b.receives().await == received {
            assert!(
                tokio::time::Instant::now() < deadline,
                "B never got the poll"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.kill(&prefix, "b").await;
    };
    let ((status, body), ()) = tokio::join!(poll_status(&a, &token, &alice), killed);
    assert_eq!(
        (status, &body["error"]),
        (404, &json!("unknown_connection"))
    );
    assert_eq!(forward_failures(&a, "poll"), failures + 1);
}

/// A hub's channels and keys begin with its name, Signet's own with a reserved one: a hub named
/// `forward` would share `{prefix}:forward:all` with the forwarding channel of a node named
/// `all`. With `[cluster]` such a name stops the server at start-up; alone, a node has no shared
/// names and serves it.
#[actix_web::test]
async fn a_hub_named_like_signets_own_channels_is_refused_in_a_cluster() {
    let redis = shared();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let prefix = prefix("reserved");
    let clustered = [
        ("SIGNET__CLUSTER__REDIS_URL", redis.url()),
        ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix),
    ];
    let clustered: Vec<(&str, &str)> = clustered.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for name in signet::cluster::RESERVED_NAMES {
        let settings = crate::helpers::test_settings(data_dir.path(), &clustered);
        let err = signet::Server::new(settings)
            .hub(name, |hub| hub)
            .build()
            .await
            .err()
            .unwrap_or_else(|| panic!("a hub named `{name}` was registered"));
        assert_eq!(
            err.to_string(),
            format!(
                "hub name `{name}`: with [cluster] a hub may not be named `forward`, `owner`, \
                 `owner-token`, `revocations`, `revoked`, `nonce`, `nonces`, since Signet's own \
                 Redis channels and keys begin with these names"
            )
        );
    }
    let settings = crate::helpers::test_settings(data_dir.path(), &clustered);
    assert!(signet::Server::new(settings)
        .hub("forwarding", |hub| hub)
        .build()
        .await
        .is_ok());
    let alone = crate::helpers::test_settings(data_dir.path(), &[]);
    assert!(signet::Server::new(alone)
        .hub("forward", |hub| hub)
        .build()
        .await
        .is_ok());
}
