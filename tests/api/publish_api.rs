//! The publish API (`/api/hubs/{hub}/...`): a backend with an API key (or a `signet:server`
//! token) sends to official `@microsoft/signalr` clients by all, user, group and connection,
//! manages groups, disconnects a user and asks for presence; scopes, revocation, bad input,
//! the CLI, the audit trail, and one node's call reaching a client on another node.

use crate::cli::{ok, signet};
use crate::demo::lines_of;
use crate::helpers::{
    answer, claims, each_store, kid_of, sign_hs, user_token, Answer, Backend, KillOnDrop,
    TEST_SECRET,
};
use crate::ws_client::{admin_token, spawn_hub, spawn_hub_on, HubServer};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long an expected event may take (the machine is shared; events come in milliseconds).
const WITHIN: Duration = Duration::from_secs(15);

/// A token for a backend: role `signet:server`.
fn server_token(sub: &str) -> String {
    let mut c = claims(sub);
    c["roles"] = json!(["signet:server"]);
    sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &c,
    )
}

/// Where a test server listens: an in-process one, or the binary's `host:port`.
trait Reachable {
    fn url(&self, path: &str) -> String;
}

impl Reachable for HubServer {
    fn url(&self, path: &str) -> String {
        HubServer::url(self, path)
    }
}

impl Reachable for String {
    fn url(&self, path: &str) -> String {
        format!("http://{self}{path}")
    }
}

/// `method path` with `Authorization: <authorization>` and a JSON body when given.
async fn call(
    server: &dyn Reachable,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut req = awc::Client::default().request(method, server.url(path));
    if let Some(value) = authorization {
        req = req.insert_header(("Authorization", value));
    }
    let res = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    };
    answer(res.expect("request sent")).await
}

/// Creates an API key with `scopes` through the admin API; returns `(id, "ApiKey <key>")`.
async fn create_key(server: &HubServer, scopes: &[&str]) -> (String, String) {
    let admin = format!("Bearer {}", admin_token("key-admin"));
    let created = call(
        server,
        "POST",
        "/api/admin/api-keys",
        Some(&admin),
        Some(json!({"name": "backend", "scopes": scopes})),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.headers.get("cache-control").unwrap(), "no-store");
    (created.str("id"), format!("ApiKey {}", created.str("key")))
}

fn send(target: &str, arguments: Value) -> Option<Value> {
    Some(json!({"target": target, "arguments": arguments}))
}

/// Official clients in a Node.js process (`tests/conformance/e2e/publish-listener.mjs`) that
/// report every `Notify` they receive.
struct Listener {
    _child: KillOnDrop,
    events: mpsc::Receiver<String>,
}

impl Listener {
    /// Starts one connection per `(label, token, transport, protocol)` and waits until each
    /// has started; returns the listener and the connection ids in that order.
    async fn start(url: &str, connections: &[(&str, &str, &str, &str)]) -> (Self, Vec<String>) {
        let spec: Vec<Value> = connections
            .iter()
            .map(|(label, token, transport, protocol)| {
                json!({"label": label, "token": token, "transport": transport, "protocol": protocol})
            })
            .collect();
        let root = env!("CARGO_MANIFEST_DIR");
        let mut child = Command::new("node")
            .arg(format!("{root}/tests/conformance/e2e/publish-listener.mjs"))
            .env("SIGNET_URL", url)
            .env("SIGNET_CONNECTIONS", Value::from(spec).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (Node.js 20+, `npm ci --prefix tests/conformance`)");
        let events = lines_of(child.stdout.take().expect("piped stdout"));
        let mut listener = Self {
            _child: KillOnDrop(child),
            events,
        };
        let mut ids = Vec::new();
        for (label, ..) in connections {
            let ready = listener.next().await;
            assert_eq!(ready["ready"], *label, "{ready}");
            ids.push(ready["connectionId"].as_str().expect("an id").to_string());
        }
        (listener, ids)
    }

    /// The next event, failing after [`WITHIN`].
    async fn next(&mut self) -> Value {
        let started = Instant::now();
        loop {
            match self.events.try_recv() {
                Ok(line) => return serde_json::from_str(&line).expect("a JSON line"),
                Err(mpsc::TryRecvError::Disconnected) => panic!("the listener ended"),
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(started.elapsed() < WITHIN, "no event within {WITHIN:?}");
                    // Paces a poll of the pipe reader, not a fixed wait.
                    actix_web::rt::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Exactly these `(label, arguments)` deliveries of `Notify`, in any order across labels;
    /// anything else arriving first fails.
    async fn expect(&mut self, deliveries: &[(&str, Value)]) {
        let mut left: Vec<(String, Value)> = deliveries
            .iter()
            .map(|(label, args)| (label.to_string(), args.clone()))
            .collect();
        while !left.is_empty() {
            let event = self.next().await;
            let got = (
                event["label"].as_str().unwrap_or("").to_string(),
                event["arguments"].clone(),
            );
            let position = left.iter().position(|want| *want == got);
            let Some(position) = position else {
                panic!("unexpected {event}; still waiting for {left:?}");
            };
            left.remove(position);
        }
    }
}

/// A backend calling one server with one `Authorization`.
struct Caller<'a> {
    server: &'a dyn Reachable,
    authorization: String,
}

impl Caller<'_> {
    async fn call(&self, method: &str, path: &str) -> Answer {
        call(self.server, method, path, Some(&self.authorization), None).await
    }

    /// `POST path` `{"target": "Notify", arguments}`; its status.
    async fn notify(&self, path: &str, arguments: Value) -> u16 {
        let body = send("Notify", arguments);
        call(self.server, "POST", path, Some(&self.authorization), body)
            .await
            .status
    }
}

/// `args` for each of the three clients of the send test.
fn everyone(args: Value) -> [(&'static str, Value); 3] {
    [
        ("alice", args.clone()),
        ("alice2", args.clone()),
        ("bob", args),
    ]
}

#[actix_web::test]
async fn official_clients_receive_sends_to_all_users_groups_and_connections() {
    let server = spawn_hub(&[]).await;
    let (_, authorization) = create_key(&server, &["hub:home:send", "hub:home:groups"]).await;
    let backend = Caller {
        server: &server,
        authorization,
    };
    let (alice, alice2, bob) = (user_token("alice"), user_token("alice"), user_token("bob"));
    let (mut clients, ids) = Listener::start(
        &server.url(""),
        &[
            ("alice", &alice, "WebSockets", "json"),
            ("alice2", &alice2, "ServerSentEvents", "json"),
            ("bob", &bob, "WebSockets", "msgpack"),
        ],
    )
    .await;
    assert_eq!(
        backend
            .notify("/api/hubs/home/send", json!(["all", 1]))
            .await,
        202
    );
    clients.expect(&everyone(json!(["all", 1]))).await;
    let to_alice = backend.notify("/api/hubs/home/users/alice/send", json!(["alice"]));
    assert_eq!(to_alice.await, 202);
    clients
        .expect(&[("alice", json!(["alice"])), ("alice2", json!(["alice"]))])
        .await;

    groups_reach_their_members(&backend, &mut clients, &ids[2]).await;
    single_connections_and_exclusions(&backend, &mut clients, &ids[1], &ids[2]).await;

    // The group is empty now: nothing arrives before the last broadcast.
    backend
        .notify("/api/hubs/home/groups/g1/send", json!(["nobody"]))
        .await;
    backend.notify("/api/hubs/home/send", json!(["end"])).await;
    clients.expect(&everyone(json!(["end"]))).await;
}

/// Bob's connection joins group g1, then every connection alice has now; alice's leave again,
/// then bob's: a send to the group reaches exactly its members each time.
async fn groups_reach_their_members(backend: &Caller<'_>, clients: &mut Listener, bob_id: &str) {
    let bob_in_g1 = format!("/api/hubs/home/groups/g1/connections/{bob_id}");
    assert_eq!(backend.call("PUT", &bob_in_g1).await.status, 204);
    let added = backend
        .call("PUT", "/api/hubs/home/groups/g1/users/alice")
        .await;
    assert_eq!(added.body, json!({"connections": 2}), "{added:?}");
    assert_eq!(
        backend
            .notify("/api/hubs/home/groups/g1/send", json!(["g1"]))
            .await,
        202
    );
    clients.expect(&everyone(json!(["g1"]))).await;
    let removed = backend
        .call("DELETE", "/api/hubs/home/groups/g1/users/alice")
        .await;
    assert_eq!(removed.body, json!({"connections": 2}), "{removed:?}");
    backend
        .notify("/api/hubs/home/groups/g1/send", json!(["g1 again"]))
        .await;
    clients.expect(&[("bob", json!(["g1 again"]))]).await;
    assert_eq!(backend.call("DELETE", &bob_in_g1).await.status, 204);
    let nowhere = backend
        .call("PUT", "/api/hubs/home/groups/g1/connections/nope")
        .await;
    assert_eq!(
        (nowhere.status, nowhere.error()),
        (404, "connection_not_found")
    );
}

/// A send to one connection, and to all but one.
async fn single_connections_and_exclusions(
    backend: &Caller<'_>,
    clients: &mut Listener,
    alice2_id: &str,
    bob_id: &str,
) {
    let one = format!("/api/hubs/home/connections/{alice2_id}/send");
    assert_eq!(backend.notify(&one, json!([{"n": 1}])).await, 202);
    clients.expect(&[("alice2", json!([{"n": 1}]))]).await;
    let body = json!({"target": "Notify", "arguments": ["not bob"], "excluded": [bob_id]});
    let path = "/api/hubs/home/send";
    let excluding = call(
        backend.server,
        "POST",
        path,
        Some(&backend.authorization),
        Some(body),
    );
    assert_eq!(excluding.await.status, 202);
    clients
        .expect(&[
            ("alice", json!(["not bob"])),
            ("alice2", json!(["not bob"])),
        ])
        .await;
}

#[actix_web::test]
async fn key_scopes_are_refused_where_they_do_not_apply() {
    let server = spawn_hub(&[]).await;
    let (_, presence_only) = create_key(&server, &["hub:home:presence"]).await;
    let (_, other_hub) = create_key(&server, &["hub:lobby:send"]).await;
    let (_, any_hub_send) = create_key(&server, &["hub:*:send"]).await;
    let message = || send("Notify", json!([]));
    let post = |auth: Option<String>, path: &'static str| {
        let server = &server;
        async move { call(server, "POST", path, auth.as_deref(), message()).await }
    };

    let refused = post(None, "/api/hubs/home/send").await;
    assert_eq!((refused.status, refused.error()), (401, "missing_token"));
    let forged = post(
        Some(format!("ApiKey sgk_0123456789abcdef_{}", "A".repeat(43))),
        "/api/hubs/home/send",
    )
    .await;
    assert_eq!((forged.status, forged.error()), (401, "invalid_api_key"));
    let user = post(
        Some(format!("Bearer {}", user_token("u"))),
        "/api/hubs/home/send",
    )
    .await;
    assert_eq!((user.status, user.error()), (403, "forbidden"));
    let admin = post(
        Some(format!("Bearer {}", admin_token("a"))),
        "/api/hubs/home/send",
    )
    .await;
    assert_eq!(admin.status, 403, "an admin is not a backend: {admin:?}");

    for (key, path) in [
        (&presence_only, "/api/hubs/home/send"),
        (&other_hub, "/api/hubs/home/send"),
    ] {
        let answer = post(Some(key.clone()), path).await;
        assert_eq!(
            (answer.status, answer.error()),
            (403, "forbidden"),
            "{answer:?}"
        );
    }
    assert_eq!(
        post(Some(any_hub_send.clone()), "/api/hubs/home/send")
            .await
            .status,
        202
    );
    let unknown_hub = post(Some(any_hub_send.clone()), "/api/hubs/nope/send").await;
    assert_eq!(
        (unknown_hub.status, unknown_hub.error()),
        (404, "hub_not_found")
    );
    let groups = call(
        &server,
        "PUT",
        "/api/hubs/home/groups/g/users/u",
        Some(&any_hub_send),
        None,
    )
    .await;
    assert_eq!(groups.status, 403, "{groups:?}");
    let kick = call(
        &server,
        "DELETE",
        "/api/hubs/home/users/u/connections",
        Some(&presence_only),
        None,
    )
    .await;
    assert_eq!(kick.status, 403, "{kick:?}");
    let asked = call(
        &server,
        "GET",
        "/api/hubs/home/users/u",
        Some(&presence_only),
        None,
    )
    .await;
    assert_eq!(asked.body["online"], false, "{asked:?}");

    // A `signet:server` token may do everything, on every hub; `Bearer sgk_...` is a key too.
    let backend = format!("Bearer {}", server_token("backend"));
    assert_eq!(
        post(Some(backend.clone()), "/api/hubs/home/send")
            .await
            .status,
        202
    );
    let kicked = call(
        &server,
        "DELETE",
        "/api/hubs/home/users/u/connections",
        Some(&backend),
        None,
    )
    .await;
    assert_eq!(
        (kicked.status, kicked.body.clone()),
        (200, json!({"closed": 0}))
    );
    let as_bearer = any_hub_send.replace("ApiKey ", "Bearer ");
    assert_eq!(
        post(Some(as_bearer), "/api/hubs/home/send").await.status,
        202
    );

    let metrics = crate::metrics::scrape(&server).await;
    for (labels, count) in [
        (r#"action="send",outcome="forbidden""#, 4.0),
        (r#"action="send",outcome="unauthorized""#, 2.0),
        (r#"action="send",outcome="ok""#, 3.0),
        (r#"action="send",outcome="not_found""#, 1.0),
        (r#"action="groups",outcome="forbidden""#, 1.0),
        (r#"action="disconnect",outcome="forbidden""#, 1.0),
        (r#"action="disconnect",outcome="ok""#, 1.0),
        (r#"action="presence",outcome="ok""#, 1.0),
    ] {
        let series = format!("signet_publish_api_calls_total{{{labels}}}");
        assert_eq!(
            metrics.get(&series),
            Some(&count),
            "{series} in {metrics:?}"
        );
    }
}

async fn a_revoked_key_is_refused_at_once(store: Backend) {
    let server = spawn_hub_on(store, &[]).await;
    let (id, key) = create_key(&server, &["hub:home:*"]).await;
    let admin = format!("Bearer {}", admin_token("key-admin"));
    let path = "/api/hubs/home/send";
    assert_eq!(
        call(&server, "POST", path, Some(&key), send("Notify", json!([])))
            .await
            .status,
        202
    );
    let listed = call(&server, "GET", "/api/admin/api-keys", Some(&admin), None).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{listed:?}");
    assert_eq!(listed.body[0]["id"], id.as_str());
    assert_eq!(listed.body[0]["scopes"], json!(["hub:home:*"]));
    assert!(
        listed.body[0].get("key").is_none(),
        "a key is shown once: {listed:?}"
    );

    let revoke = format!("/api/admin/api-keys/{id}");
    assert_eq!(
        call(&server, "DELETE", &revoke, Some(&admin), None)
            .await
            .status,
        204
    );
    let refused = call(&server, "POST", path, Some(&key), send("Notify", json!([]))).await;
    assert_eq!((refused.status, refused.error()), (401, "invalid_api_key"));
    let again = call(&server, "DELETE", &revoke, Some(&admin), None).await;
    assert_eq!((again.status, again.error()), (404, "api_key_not_found"));
    let listed = call(&server, "GET", "/api/admin/api-keys", Some(&admin), None).await;
    assert!(listed.body[0]["revokedAt"].is_i64(), "{listed:?}");
    // Keys are an administrator's to manage.
    let user = format!("Bearer {}", user_token("u"));
    let create = call(
        &server,
        "POST",
        "/api/admin/api-keys",
        Some(&user),
        Some(json!({"name": "x", "scopes": ["hub:*:*"]})),
    )
    .await;
    assert_eq!(create.status, 403);
}

each_store!(a_revoked_key_is_refused_at_once);

#[actix_web::test]
async fn bad_input_is_400_naming_the_field_and_a_large_body_413() {
    let server = spawn_hub(&[("SIGNET__SERVER__MAX_REQUEST_BODY_BYTES", "4096")]).await;
    let key = format!("Bearer {}", server_token("backend"));
    let post =
        |path: &'static str, body: Value| call(&server, "POST", path, Some(&key), Some(body));
    for (path, body, names) in [
        (
            "/api/hubs/home/send",
            json!({"arguments": []}),
            "missing field `target`",
        ),
        (
            "/api/hubs/home/send",
            json!({"target": 5}),
            "`target`: invalid type",
        ),
        (
            "/api/hubs/home/send",
            json!({"target": "Notify", "arguments": {}}),
            "`arguments`: invalid type",
        ),
        (
            "/api/hubs/home/send",
            json!({"target": "Notify", "argument": []}),
            "unknown field `argument`",
        ),
        (
            "/api/hubs/home/send",
            json!({"target": ""}),
            "`target`: must be 1 to",
        ),
        (
            "/api/hubs/home/send",
            json!({"target": "Notify", "excluded": [1]}),
            "`excluded[0]`: invalid type",
        ),
        (
            "/api/hubs/home/users/u/send",
            json!({"target": "Notify", "excluded": ["c"]}),
            "`excluded`: only",
        ),
    ] {
        let answer = post(path, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        let message = answer.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{body}: {message}");
    }
    let long_group = format!("/api/hubs/home/groups/{}/send", "g".repeat(300));
    let answer = call(
        &server,
        "POST",
        &long_group,
        Some(&key),
        send("Notify", json!([])),
    )
    .await;
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("`group`"),
        "{answer:?}"
    );

    let large = post(
        "/api/hubs/home/send",
        json!({"target": "Notify", "arguments": ["x".repeat(5000)]}),
    )
    .await;
    assert_eq!((large.status, large.error()), (413, "payload_too_large"));
    let res = server
        .http
        .post(server.url("/api/hubs/home/send"))
        .insert_header(("Authorization", key.as_str()))
        .insert_header(("Content-Type", "text/plain"))
        .send_body("{}")
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 415);
}

#[actix_web::test]
async fn disconnect_closes_the_users_connections_and_presence_follows() {
    let server = spawn_hub(&[]).await;
    let (_, key) = create_key(&server, &["hub:home:presence", "hub:home:disconnect"]).await;
    let presence = |sub: &'static str, method: &'static str| {
        let (server, key) = (&server, &key);
        async move {
            call(
                server,
                method,
                &format!("/api/hubs/home/users/{sub}"),
                Some(key),
                None,
            )
            .await
        }
    };
    let absent = presence("carol", "GET").await;
    assert_eq!(
        absent.body,
        json!({"sub": "carol", "online": false, "connections": []})
    );
    assert_eq!(presence("carol", "HEAD").await.status, 404);

    let mut first = server.open(&user_token("carol")).await;
    let mut second = server.open(&user_token("carol")).await;
    let mut dave = server.open(&user_token("dave")).await;
    let present = presence("carol", "GET").await;
    assert_eq!(present.body["online"], true, "{present:?}");
    assert_eq!(
        present.body["connections"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(presence("carol", "HEAD").await.status, 200);

    let closed = call(
        &server,
        "DELETE",
        "/api/hubs/home/users/carol/connections",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(
        (closed.status, closed.body.clone()),
        (200, json!({"closed": 2}))
    );
    for client in [&mut first, &mut second] {
        let ending = client.expect_close(WITHIN).await;
        let message = ending.close_message.expect("a Close message");
        assert_ne!(message["allowReconnect"], true, "{message}");
    }
    dave.assert_echo("still here").await;
    let deadline = Instant::now() + WITHIN;
    while presence("carol", "HEAD").await.status != 404 {
        assert!(Instant::now() < deadline, "carol still present");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `signet apikey <args>` on `dir`.
fn apikey(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    signet(dir, None, &[&["apikey"], args].concat(), None)
}

#[actix_web::test]
async fn keys_made_and_revoked_with_the_cli_hold_on_a_running_server() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let dir = data_dir.path().to_path_buf();
    let scope = ["--scope", "hub:home:send"];
    let key = ok(&apikey(
        &dir,
        &[&["create", "--name", "cli backend"], &scope[..]].concat(),
    ));
    let key = key.trim().to_string();
    assert!(key.starts_with("sgk_"), "{key}");
    let id = key[4..20].to_string();
    let bad = apikey(&dir, &["create", "--name", "x", "--scope", "hub:home:fly"]);
    let refusal = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(
        !bad.status.success() && refusal.contains("`scopes`"),
        "{refusal}"
    );

    let server =
        crate::ws_client::spawn_hub_with(crate::helpers::test_settings(&dir, &[]), data_dir).await;
    let backend = Caller {
        server: &server,
        authorization: format!("ApiKey {key}"),
    };
    assert_eq!(backend.notify("/api/hubs/home/send", json!([])).await, 202);
    let listed = ok(&apikey(&dir, &["list"]));
    for shown in [id.as_str(), "cli backend", "hub:home:send"] {
        assert!(listed.contains(shown), "{shown} in {listed}");
    }
    assert!(
        !listed.contains(&key[21..]),
        "the list never shows a key: {listed}"
    );

    // Revoked by another process: refused at once.
    ok(&apikey(&dir, &["revoke", &id]));
    assert_eq!(backend.notify("/api/hubs/home/send", json!([])).await, 401);
    assert!(!apikey(&dir, &["revoke", &id]).status.success());
}

/// Two nodes on the test Redis and one PostgreSQL database: the key is the same on both.
async fn two_nodes() -> (HubServer, HubServer) {
    let (redis, prefix) = (
        crate::redis_server::shared().url(),
        crate::redis_server::prefix("publish"),
    );
    let db = crate::postgres::fresh_database().await;
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let env = [
            ("SIGNET__CLUSTER__REDIS_URL", redis.as_str()),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix.as_str()),
            ("SIGNET__CLUSTER__NODE_ID", id),
            ("SIGNET__STORE__URL", db.as_str()),
            ("SIGNET__STORE__MAX_CONNECTIONS", "4"),
        ];
        nodes.push(spawn_hub(&env).await);
    }
    let b = nodes.pop().expect("two nodes");
    (nodes.pop().expect("two nodes"), b)
}

#[actix_web::test]
async fn a_call_to_node_a_reaches_a_client_on_node_b_and_a_revocation_on_b_holds_on_a() {
    let (a, b) = two_nodes().await;
    let (id, key) = create_key(
        &a,
        &["hub:home:send", "hub:home:groups", "hub:home:presence"],
    )
    .await;
    let erin = user_token("erin");
    let (mut clients, ids) =
        Listener::start(&b.url(""), &[("erin", &erin, "WebSockets", "json")]).await;
    let connection = &ids[0];
    assert!(connection.starts_with("b."), "{connection}");

    // Node A sees erin's connection on B (presence is written within 250 ms).
    let deadline = Instant::now() + WITHIN;
    loop {
        let asked = call(&a, "GET", "/api/hubs/home/users/erin", Some(&key), None).await;
        if asked.body["connections"] == json!([connection]) {
            break;
        }
        assert!(Instant::now() < deadline, "A never saw erin: {asked:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |path: String, args: Value| {
        let (a, key) = (&a, &key);
        async move {
            call(a, "POST", &path, Some(key), send("Notify", args))
                .await
                .status
        }
    };
    assert_eq!(
        post("/api/hubs/home/users/erin/send".into(), json!(["user"])).await,
        202
    );
    clients.expect(&[("erin", json!(["user"]))]).await;
    let join = format!("/api/hubs/home/groups/team/connections/{connection}");
    let joined = call(&a, "PUT", &join, Some(&key), None).await;
    assert_eq!(joined.status, 204, "B applies A's request: {joined:?}");
    assert_eq!(
        post("/api/hubs/home/groups/team/send".into(), json!(["group"])).await,
        202
    );
    clients.expect(&[("erin", json!(["group"]))]).await;
    let leave = call(
        &a,
        "DELETE",
        "/api/hubs/home/groups/team/users/erin",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(leave.body, json!({"connections": 1}), "{leave:?}");
    let one = format!("/api/hubs/home/connections/{connection}/send");
    assert_eq!(post(one, json!(["connection"])).await, 202);
    assert_eq!(
        post("/api/hubs/home/groups/team/send".into(), json!(["left"])).await,
        202
    );
    assert_eq!(
        post("/api/hubs/home/send".into(), json!(["all"])).await,
        202
    );
    clients
        .expect(&[("erin", json!(["connection"])), ("erin", json!(["all"]))])
        .await;

    // Revoked on B: A refuses it on the next call, reading the shared store.
    let admin = format!("Bearer {}", admin_token("key-admin"));
    let revoke = call(
        &b,
        "DELETE",
        &format!("/api/admin/api-keys/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(revoke.status, 204);
    assert_eq!(
        post("/api/hubs/home/send".into(), json!(["late"])).await,
        401
    );

    // A backend token on A closes erin's connection on B.
    let backend = format!("Bearer {}", server_token("backend"));
    let kicked = call(
        &a,
        "DELETE",
        "/api/hubs/home/users/erin/connections",
        Some(&backend),
        None,
    )
    .await;
    assert_eq!(kicked.body, json!({"closed": 1}), "{kicked:?}");
    let closed = clients.next().await;
    assert_eq!(closed["closed"], "erin", "{closed}");
}

/// The `publish` events of an audit file: `[route, outcome, caller]` each, checking that every
/// one names hub `home` and client 127.0.0.1, and whom it was for in at most 256 bytes.
fn publish_events(text: &str) -> Vec<[String; 3]> {
    let events = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|event| event["event"] == "publish");
    events
        .map(|e| {
            assert!(e["hub"] == "home" && e["client"] == "127.0.0.1", "{e}");
            assert!(e["to"].as_str().is_some_and(|to| to.len() <= 256), "{e}");
            ["route", "outcome", "caller"].map(|f| e[f].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// The real binary with `[audit] output = "file"`: every publish call is an audit event naming
/// the caller (`key:<id>` or the token's `sub`) and never the key.
#[actix_web::test]
async fn every_publish_call_is_audited_and_no_key_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_path_buf();
    let created = apikey(
        &data_dir,
        &["create", "--name", "audited", "--scope", "hub:home:send"],
    );
    let key = ok(&created).trim().to_string();
    let (id, secret) = (&key[4..20], &key[21..]);
    let forged_secret = "B".repeat(43);
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    command.env("SIGNET__JWT__SECRET", TEST_SECRET);
    let mut child = crate::audit::serve_auditing(command, &data_dir, &data_dir);
    let lines = lines_of(child.0.stdout.take().expect("piped stdout"));
    let mut log = Vec::new();
    let address = crate::audit::listening_address(&lines, &mut log);

    let (as_key, forged) = (
        format!("ApiKey {key}"),
        format!("ApiKey sgk_{id}_{forged_secret}"),
    );
    let (backend, user) = (server_token("the-backend"), user_token("a-user"));
    let long_path = format!("/api/hubs/home/users/{}/send", "u".repeat(2000));
    for (method, path, authorization, status) in [
        ("POST", "/api/hubs/home/send", as_key.clone(), 202),
        ("PUT", "/api/hubs/home/groups/g/users/u", as_key, 403),
        ("POST", "/api/hubs/home/send", forged, 401),
        (
            "POST",
            "/api/hubs/home/send",
            format!("Bearer {backend}"),
            202,
        ),
        ("POST", "/api/hubs/home/send", format!("Bearer {user}"), 403),
        ("POST", &long_path, "ApiKey nonsense".to_string(), 401),
    ] {
        let answer = call(
            &address,
            method,
            path,
            Some(&authorization),
            send("Notify", json!([])),
        )
        .await;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
    }
    child.stop();
    log.extend(lines.try_iter());

    let text = std::fs::read_to_string(data_dir.join("audit.log")).expect("the audit file");
    let events = publish_events(&text);
    let key_caller = format!("key:{id}");
    let want = [
        ("send_all", "ok", key_caller.as_str()),
        ("group_add_user", "forbidden", key_caller.as_str()),
        ("send_all", "unauthorized", "unauthenticated"),
        ("send_all", "ok", "the-backend"),
        ("send_all", "forbidden", "a-user"),
        ("send_user", "unauthorized", "unauthenticated"),
    ];
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| (e[0].as_str(), e[1].as_str(), e[2].as_str()))
        .collect();
    assert_eq!(seen, want, "{text}");
    for secret in [secret, forged_secret.as_str()] {
        assert!(!text.contains(secret), "a key in the audit file: {text}");
        assert!(
            !log.iter().any(|line| line.contains(secret)),
            "a key in the log: {log:#?}"
        );
    }
}
