//! The official `@microsoft/signalr` client through nginx's round robin in front of three
//! Signet processes on one Redis and one PostgreSQL (the [`crate::cluster_harness`]): echo,
//! streams, a broadcast reaching clients on every node, a group spanning nodes, token refresh,
//! an admin's kick and a logout closing connections on every node, stateful reconnect landing
//! on another node. The scenarios are `tests/conformance/cluster/through-balancer.mjs`; the
//! tests here share one cluster and pick scenarios and combinations from it.

use crate::cluster_harness::SignetCluster;
use crate::conformance::{node_test, NodeRun};
use crate::helpers::TEST_PASSWORD;
use crate::redis_server::{prefix, shared};
use std::path::Path;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Every combination of transport and protocol.
const FIVE_COMBOS: &str = "WebSockets/json,WebSockets/msgpack,ServerSentEvents/json,\
                           LongPolling/json,LongPolling/msgpack";
/// A run takes seconds (token refreshes wait for a 3 s token's expiry per combination); this
/// only stops a hung one.
const RUN_DEADLINE: Duration = Duration::from_secs(240);
/// The user whose sessions the logout scenario opens and ends.
const USER: &str = "harness-alice";

static CLUSTER: OnceCell<SignetCluster> = OnceCell::const_new();

/// The cluster these tests share: nothing they do leaks into another (unique subjects, groups
/// and sessions), so one start-up serves them all.
async fn cluster() -> &'static SignetCluster {
    CLUSTER
        .get_or_init(|| async {
            let cluster = SignetCluster::start(3, &shared().url(), &prefix("balanced"), &[]).await;
            cluster.create_user(USER, &["user"], TEST_PASSWORD).await;
            cluster
        })
        .await
}

/// Runs the scenarios whose names match `pattern` over `combos` through the balancer;
/// `skip_negotiation` connects WebSockets without negotiate.
async fn run_scenarios(
    cluster: &SignetCluster,
    pattern: &str,
    combos: &str,
    skip_negotiation: bool,
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/cluster/through-balancer.mjs");
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.url("")).collect();
    let mut command = node_test(&cluster.url(""), 60_000);
    command
        .arg(format!("--test-name-pattern={pattern}"))
        .arg(script)
        .env("SIGNET_NODE_URLS", nodes.join(","))
        .env("SIGNET_COMBOS", combos)
        .env(
            "SIGNET_SKIP_NEGOTIATION",
            if skip_negotiation { "1" } else { "0" },
        )
        .env("SIGNET_TEST_USERS", USER)
        .env("SIGNET_TEST_PASSWORD", TEST_PASSWORD);
    let status = NodeRun::start(command)
        .wait("the scenarios through the balancer", RUN_DEADLINE)
        .await;
    assert!(
        status.success(),
        "the official client failed a scenario through the balancer ({status}); node's report \
         is above; the nodes and nginx logged:\n{}",
        cluster.logs()
    );
}

/// Scenarios that need no handover of a negotiated connection between nodes.
const WITHOUT_HANDOVER: &str = "echo|broadcast|refresh|kick|logout";

#[actix_web::test]
async fn websockets_without_negotiate_run_through_the_balancer_on_every_node() {
    let cluster = cluster().await;
    run_scenarios(
        cluster,
        WITHOUT_HANDOVER,
        "WebSockets/json,WebSockets/msgpack",
        true,
    )
    .await;
    // Round robin spread the sockets: every node upgraded some.
    let upgrades: Vec<String> = cluster
        .balancer
        .upstreams_used()
        .into_iter()
        .filter(|(request, _)| request.starts_with("GET /hubs/home 101"))
        .map(|(_, upstream)| upstream)
        .collect();
    for node in &cluster.nodes {
        let address = node.address.to_string();
        assert!(
            upgrades.contains(&address),
            "no WebSocket through nginx reached {}: {upgrades:?}",
            node.id
        );
    }
}

#[actix_web::test]
async fn every_transport_and_protocol_runs_through_the_balancer() {
    run_scenarios(cluster().await, WITHOUT_HANDOVER, FIVE_COMBOS, false).await;
}

#[actix_web::test]
async fn stateful_reconnect_resumes_through_the_balancer_on_another_node() {
    run_scenarios(
        cluster().await,
        "stateful reconnect",
        "WebSockets/json,WebSockets/msgpack",
        false,
    )
    .await;
}

#[actix_web::test]
async fn a_group_spans_the_nodes_through_the_balancer() {
    run_scenarios(cluster().await, "group", FIVE_COMBOS, false).await;
}

#[actix_web::test]
async fn one_node_behind_nginx_serves_every_transport_and_protocol() {
    // The balancer's config carries every transport (WebSocket upgrades, unbuffered SSE, long
    // polls) and stateful reconnect; with one node nothing needs to cross nodes.
    let cluster = SignetCluster::start(1, &shared().url(), &prefix("one"), &[]).await;
    cluster.create_user(USER, &["user"], TEST_PASSWORD).await;
    run_scenarios(
        &cluster,
        "echo|broadcast|kick|logout|stateful",
        FIVE_COMBOS,
        false,
    )
    .await;
}
