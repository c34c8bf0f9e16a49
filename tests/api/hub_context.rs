//! What a library user's hub gets from its `HubContext`, through the public API only: its
//! name, and in a cluster its [`signet::Backplane`]: keys of its own in the real Redis,
//! scripts run on them atomically, and messages to the other nodes (never back to itself).

use crate::cluster::SPREAD;
use crate::helpers::{claims, kid_of, sign_hs, spawn_server, test_settings, TestApp, TEST_SECRET};
use crate::redis_server::{prefix, shared};
use crate::ws_client::open_at;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use signet::{bind, BackplaneScript, HubBuilder, HubContext, HubError, MethodSpec, Param, Server};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// KEYS[1] a counter; answers its new value.
static VISIT: LazyLock<BackplaneScript> =
    LazyLock::new(|| BackplaneScript::new("return redis.call('INCR', KEYS[1])"));

/// Hub `board`: `Where()` says what the context told the setup; `Visit()` counts visits on
/// the backplane; `Say(text)` publishes to the other nodes; `Heard()` lists what this node
/// received from them.
fn board(hub: HubBuilder, context: &HubContext<'_>) -> HubBuilder {
    let place = json!({ "hub": context.hub(), "clustered": context.backplane().is_some() });
    let hub = hub.method(MethodSpec::new("Where", &[]), move |_, _| {
        let place = place.clone();
        async move { Ok(Some(place)) }
    });
    let Some(backplane) = context.backplane() else {
        return hub;
    };
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let inbox = heard.clone();
    backplane.subscribe("news", move |message| {
        if let Ok(mut heard) = inbox.lock() {
            heard.push(String::from_utf8_lossy(message).into_owned());
        }
    });
    let (visits, says) = (backplane.clone(), backplane);
    hub.method(MethodSpec::new("Visit", &[]), move |_, _| {
        let backplane = visits.clone();
        async move {
            let count = backplane
                .script(&VISIT)
                .key("visits")
                .run()
                .await
                .map_err(HubError::internal)?;
            Ok(count.as_integer().map(Value::from))
        }
    })
    .method(MethodSpec::new("Say", &[Param::String]), move |_, args| {
        let backplane = says.clone();
        async move {
            let (text,): (String,) = bind(args)?;
            backplane
                .publish("news", text.into_bytes())
                .map_err(HubError::internal)?;
            Ok(None)
        }
    })
    .method(MethodSpec::new("Heard", &[]), move |_, _| {
        let heard = heard.lock().map(|h| h.clone()).unwrap_or_default();
        async move { Ok(Some(json!(heard))) }
    })
}

async fn board_server(extra_env: &[(&str, &str)]) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(data_dir.path(), extra_env);
    let server = Server::new(settings.clone()).hub_with_context("board", board);
    spawn_server(server, settings, data_dir).await
}

/// Waits until the node is ready: in a cluster, every channel (the board's `news` among them)
/// is subscribed.
async fn ready(app: &TestApp) {
    let deadline = std::time::Instant::now() + SPREAD;
    while app.get("/readyz", None).await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never got ready"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token() -> String {
    sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &claims("alice"),
    )
}

#[actix_web::test]
async fn a_hubs_backplane_shares_keys_and_messages_between_nodes_under_its_own_names() {
    let redis = shared();
    let (url, prefix) = (redis.url(), prefix("board"));
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let node = board_server(&[
            ("SIGNET__CLUSTER__REDIS_URL", url.as_str()),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix.as_str()),
            ("SIGNET__CLUSTER__NODE_ID", id),
        ])
        .await;
        ready(&node).await;
        nodes.push(node);
    }
    let mut a = open_at(&nodes[0].url("/hubs/board"), &token()).await;
    let mut b = open_at(&nodes[1].url("/hubs/board"), &token()).await;
    assert_eq!(
        a.call("w", "Where", json!([])).await["result"],
        json!({ "hub": "board", "clustered": true })
    );

    // One counter for both nodes, in the hub's namespace.
    assert_eq!(a.call("1", "Visit", json!([])).await["result"], json!(1));
    assert_eq!(b.call("2", "Visit", json!([])).await["result"], json!(2));
    assert_eq!(a.call("3", "Visit", json!([])).await["result"], json!(3));
    let stored = redis.command(&format!("GET {prefix}:board:app:visits"));
    assert!(stored.contains('3'), "{stored}");

    // A publish reaches the other node's handler, not its own.
    let said = a.call("4", "Say", json!(["hello from a"])).await;
    assert!(said.get("error").is_none(), "{said}");
    let deadline = std::time::Instant::now() + SPREAD;
    loop {
        let heard = b.call("h", "Heard", json!([])).await["result"].clone();
        if heard == json!(["hello from a"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b heard {heard}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.call("h", "Heard", json!([])).await["result"], json!([]));
}

#[actix_web::test]
async fn a_single_node_hub_has_no_backplane() {
    let node = board_server(&[]).await;
    let mut client = open_at(&node.url("/hubs/board"), &token()).await;
    assert_eq!(
        client.call("w", "Where", json!([])).await["result"],
        json!({ "hub": "board", "clustered": false })
    );
    let missing = client.call_error("v", "Visit", json!([])).await;
    assert!(missing.contains("Method does not exist"), "{missing}");
}
