//! Faults in the cluster harness ([`crate::cluster_harness`]: three Signet processes, one
//! PostgreSQL, nginx round robin in front), on a Redis of this test's own: Redis killed and
//! restarted mid-test, Redis dropping every subscriber (`CLIENT KILL TYPE pubsub`), and a node
//! killed with SIGKILL (its users reconnect through the balancer to the others, and the counts
//! drop it within 10 s), with raw WebSockets and the official client (`@microsoft/signalr`,
//! automatic reconnect), both without negotiate, which needs no handover between nodes.

use crate::cluster_harness::SignetCluster;
use crate::conformance::{node_test, NodeRun};
use crate::helpers::{eventually, user_token};
use crate::redis_server::{prefix, RedisServer};
use crate::ws_client::{admin_token, open_at, RawClient, PROMPT};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How fast the counts must forget a dead node (the bound).
const DEAD_NODE_DROPPED: Duration = Duration::from_secs(10);
/// Within this, the backplane is back after a Redis fault (about 0.1 s unloaded).
const BACK: Duration = Duration::from_secs(10);

/// Waits until every node's `/readyz` answers `status`.
async fn every_node_answers(cluster: &SignetCluster, status: u16) {
    for node in &cluster.nodes {
        node.wait_readiness(status, BACK).await;
    }
}

/// The next `SystemMessage` text `client` receives within `wait`, if any.
async fn system_message(client: &mut RawClient, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, client.next_message(PROMPT))
            .await
            .ok()?;
        if message["target"] == "SystemMessage" {
            return message["arguments"][0].as_str().map(str::to_owned);
        }
    }
}

/// Broadcasts from `admin` (again every 300 ms: a publish while a node resubscribes is lost,
/// pub/sub is at most once) until every one of `clients` received one, failing after [`BACK`].
async fn broadcasts_reach(admin: &mut RawClient, clients: &mut [RawClient], label: &str) {
    let deadline = Instant::now() + BACK;
    let mut n = 0;
    for client in clients.iter_mut() {
        loop {
            n += 1;
            let text = format!("{label} {n}");
            let done = admin
                .call(&n.to_string(), "BroadcastMessage", json!([text]))
                .await;
            assert!(done.get("error").is_none(), "{done}");
            let got = system_message(client, Duration::from_millis(300)).await;
            if got.is_some_and(|t| t.starts_with(label)) {
                break;
            }
            assert!(Instant::now() < deadline, "no broadcast {label} arrived");
        }
    }
}

/// Asks `admin`'s node for the cluster-wide user count until it is `want`; how long it took.
async fn count_becomes(admin: &mut RawClient, want: Value, within: Duration) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let answer = admin
            .call(&format!("count-{n}"), "GetConnectedUsersCount", json!([]))
            .await;
        if answer["result"] == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the count is {answer}, not {want}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn the_cluster_survives_redis_restarts_killed_subscribers_and_a_killed_node() {
    let redis = RedisServer::start();
    let cluster = SignetCluster::start(3, &redis.url(), &prefix("faults"), &[]).await;
    // One user straight on each node; the admin on the first.
    let mut clients = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        clients.push(open_at(&node.url("/hubs/home"), &user_token(&format!("user-{i}"))).await);
    }
    let mut admin = open_at(&cluster.nodes[0].url("/hubs/home"), &admin_token("boss")).await;
    broadcasts_reach(&mut admin, &mut clients, "before").await;

    // Redis dies: nodes say so, local work goes on; Redis comes back empty: broadcasts cross
    // nodes again.
    redis.stop();
    every_node_answers(&cluster, 503).await;
    for client in &mut clients {
        client.assert_echo("redis is down").await;
    }
    redis.restart();
    every_node_answers(&cluster, 200).await;
    broadcasts_reach(&mut admin, &mut clients, "after the restart").await;

    // Redis drops every subscriber connection: each node resubscribes.
    let killed = redis.command("CLIENT KILL TYPE pubsub");
    let subscribers: u32 = killed.trim().trim_start_matches(':').parse().unwrap_or(0);
    assert!(subscribers >= 3, "one subscriber a node at least: {killed}");
    broadcasts_reach(&mut admin, &mut clients, "after the kill").await;

    // A node crashes: its user's socket ends, the counts drop it, and the user reconnects
    // through the balancer, which moves on to a live node; so do the official clients it held.
    let official = OfficialClients::connect(&cluster).await;
    count_becomes(&mut admin, json!(5), BACK).await;
    let killed_at = Instant::now();
    cluster.nodes[2].kill();
    official.node_killed();
    let ending = clients[2].expect_close(PROMPT).await;
    assert!(ending.close_message.is_none(), "a killed node says nothing");
    // The official clients reconnected, answered and left.
    official.reconnected(&cluster).await;
    let left = DEAD_NODE_DROPPED.saturating_sub(killed_at.elapsed());
    count_becomes(&mut admin, json!(3), left).await;
    let took = killed_at.elapsed();
    println!("the counts dropped the killed node after {took:?}");
    let mut back = open_at(&cluster.url("/hubs/home"), &user_token("user-2")).await;
    back.assert_echo("on another node").await;
    for _ in 0..3 {
        let mut another = open_at(&cluster.url("/hubs/home"), &user_token("late")).await;
        another
            .assert_echo("the balancer skips the dead node")
            .await;
    }
    clients.truncate(2);
    clients.push(back);
    broadcasts_reach(&mut admin, &mut clients, "after the crash").await;
}

/// `tests/conformance/cluster/node-killed.mjs`: six official clients of one user through the
/// balancer, two on each node, waiting for the test to kill one.
struct OfficialClients {
    run: NodeRun,
    dir: tempfile::TempDir,
}

impl OfficialClients {
    async fn connect(cluster: &SignetCluster) -> OfficialClients {
        let dir = tempfile::tempdir().expect("temp dir");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cluster/node-killed.mjs");
        let mut command = node_test(&cluster.url(""), 90_000);
        command
            .arg(script)
            .env("SIGNET_COMBOS", "WebSockets/json")
            .env("SIGNET_SKIP_NEGOTIATION", "1")
            .env("SIGNET_READY_FILE", dir.path().join("ready"))
            .env("SIGNET_KILLED_FILE", dir.path().join("killed"));
        let run = NodeRun::start(command);
        let ready = dir.path().join("ready");
        eventually(
            Duration::from_secs(60),
            "the official clients to connect",
            || ready.exists(),
        )
        .await;
        OfficialClients { run, dir }
    }

    fn node_killed(&self) {
        std::fs::write(self.dir.path().join("killed"), "").expect("the killed file");
    }

    async fn reconnected(self, cluster: &SignetCluster) {
        let status = self
            .run
            .wait(
                "the official clients of a killed node",
                Duration::from_secs(90),
            )
            .await;
        assert!(
            status.success(),
            "the official clients did not come back ({status}); node's report is above:\n{}",
            cluster.logs()
        );
    }
}
