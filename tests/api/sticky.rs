//! No sticky sessions: negotiate on one node, then the transport, sends, `DELETE` and refresh
//! on others. Real nodes on the shared test Redis, each request aimed at a chosen node (no
//! balancer).

use crate::cluster::system_message;
use crate::helpers::user_token;
use crate::redis_server::{prefix, shared, RedisServer};
use crate::transport_client::{records, token_expiring_at, HANDSHAKE_OK};
use crate::ws_client::{admin_token, HubServer};
use awc::http::header::ACCEPT;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use signet::protocol::{HubMessage, SerializedHubMessage};
use std::sync::Arc;
use std::time::Duration;

/// Within this, what one node does is seen by the others.
const SPREAD: Duration = Duration::from_secs(5);
const JSON_HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";

async fn node(redis_url: &str, prefix: &str, id: &str) -> HubServer {
    let server = crate::cluster::node(redis_url, prefix, id).await;
    let cluster = server.state.cluster.clone().expect("a cluster node");
    crate::helpers::eventually(SPREAD, "the node's channels subscribed", || {
        cluster.subscribed()
    })
    .await;
    server
}

/// Three nodes on one prefix.
async fn nodes(test: &str) -> (HubServer, HubServer, HubServer) {
    let redis = shared();
    let prefix = prefix(test);
    let a = node(&redis.url(), &prefix, "node-a").await;
    let b = node(&redis.url(), &prefix, "node-b").await;
    let c = node(&redis.url(), &prefix, "node-c").await;
    (a, b, c)
}

/// Negotiates (version 1) on `server`: (connection id, connection token).
async fn negotiate(server: &HubServer, bearer: &str, query: &str) -> (String, String) {
    let answer = server
        .negotiate(&format!("?negotiateVersion=1{query}"), Some(bearer), None)
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let field = |name: &str| answer.body[name].as_str().expect(name).to_string();
    (field("connectionId"), field("connectionToken"))
}

/// An answer: status, `WWW-Authenticate` and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    challenge: Option<String>,
    body: Bytes,
}

async fn request(request: awc::ClientRequest, body: &[u8]) -> Reply {
    let response = request
        .timeout(Duration::from_secs(60))
        .send_body(body.to_vec())
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(awc::http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .timeout(Duration::from_secs(60))
        .body()
        .limit(1 << 20)
        .await
        .expect("body");
    Reply {
        status,
        challenge,
        body,
    }
}

fn hub_url(server: &HubServer, token: &str) -> String {
    server.url(&format!("/hubs/home?id={token}"))
}

async fn poll(server: &HubServer, token: &str, bearer: &str) -> Reply {
    request(
        server.http.get(hub_url(server, token)).bearer_auth(bearer),
        b"",
    )
    .await
}

async fn send(server: &HubServer, token: &str, bearer: &str, body: &[u8]) -> Reply {
    request(
        server.http.post(hub_url(server, token)).bearer_auth(bearer),
        body,
    )
    .await
}

async fn delete(server: &HubServer, token: &str, bearer: &str) -> Reply {
    request(
        server
            .http
            .delete(hub_url(server, token))
            .bearer_auth(bearer),
        b"",
    )
    .await
}

/// `POST /hubs/home/refresh?id=` with `bearer`, the new token.
async fn refresh(server: &HubServer, token: &str, bearer: &str) -> Reply {
    let url = server.url(&format!("/hubs/home/refresh?id={token}"));
    request(server.http.post(url).bearer_auth(bearer), b"").await
}

fn echo(id: &str, text: &str) -> Vec<u8> {
    let mut frame = serde_json::to_vec(&json!({
        "type": 1, "invocationId": id, "target": "Echo", "arguments": [text]
    }))
    .expect("json");
    frame.push(0x1e);
    frame
}

/// The value of `signet_cluster_forwarded_requests_total{kind}` on `server`.
fn forwarded(server: &HubServer, kind: &str) -> u64 {
    forward_counter(server, "forwarded_requests", kind)
}

/// The value of `signet_cluster_{counter}_total{kind}` on `server` (`forwarded_requests`,
/// `forward_failures`).
pub(crate) fn forward_counter(server: &HubServer, counter: &str, kind: &str) -> u64 {
    let wanted = format!("signet_cluster_{counter}_total{{kind=\"{kind}\"}} ");
    server
        .state
        .metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&wanted).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Waits until `server` sees `sub` online anywhere in the cluster.
async fn sees_online(server: &HubServer, sub: &str) {
    let hub = server.state.hubs.get("home").expect("home hub").clone();
    let deadline = tokio::time::Instant::now() + SPREAD;
    while hub.lifetime.online(&[sub.to_string()]).await.ok() != Some(vec![true]) {
        assert!(tokio::time::Instant::now() < deadline, "{sub} never online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_websocket_on_another_node_adopts_the_connection_negotiated_on_the_first() {
    let (a, b, _c) = nodes("ws-adopt").await;
    let alice = user_token("alice");
    let (id, token) = negotiate(&a, &alice, "").await;
    assert!(
        token.starts_with("node-a."),
        "the token names its node: {token}"
    );
    assert_eq!(a.connection_count(), 1);

    let mut client = b
        .connect(&format!("?id={token}"), Some(&alice), None)
        .await
        .expect("the upgrade on node B is accepted");
    client.handshake().await;
    client.assert_echo("adopted").await;
    // The connection moved: B holds it, A no longer does (silently: nothing was closed).
    assert_eq!(b.connection_count(), 1);
    assert_eq!(a.connection_count(), 0);
    assert_eq!(forwarded(&b, "adopt"), 1);

    // A broadcast from a client on A reaches it, and so does a send to its id from A.
    sees_online(&a, "alice").await;
    let mut admin = a.open(&admin_token("the-admin")).await;
    let done = admin
        .call("b1", "BroadcastMessage", json!(["hello all"]))
        .await;
    assert!(done.get("error").is_none(), "{done}");
    assert_eq!(system_message(&mut client).await, "hello all");
    send_to(&a, &id, "to you alone").await;
    assert_eq!(system_message(&mut client).await, "to you alone");
}

#[actix_web::test]
async fn long_polling_goes_on_whichever_node_each_request_reaches() {
    let (a, b, c) = nodes("lp-anywhere").await;
    let alice = user_token("alice");
    let (_, token) = negotiate(&a, &alice, "").await;

    // The first poll, on B, adopts the connection and answers at once.
    let first = poll(&b, &token, &alice).await;
    assert_eq!((first.status, &first.body[..]), (200, &b""[..]));
    assert_eq!(send(&c, &token, &alice, JSON_HANDSHAKE).await.status, 200);
    let handshake = poll(&a, &token, &alice).await;
    assert_eq!((handshake.status, &handshake.body[..]), (200, HANDSHAKE_OK));

    for (i, (sender, poller)) in [(&a, &c), (&b, &a), (&c, &b)].into_iter().enumerate() {
        let id = format!("e{i}");
        assert_eq!(
            send(sender, &token, &alice, &echo(&id, "hi")).await.status,
            200
        );
        let answer = poll(poller, &token, &alice).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let completion = records(&answer.body);
        assert_eq!(completion[0]["invocationId"], json!(id), "{completion:?}");
        assert_eq!(completion[0]["result"], "hi");
    }

    // DELETE on C ends it: the poll waiting on A is told to stop, then it is gone.
    let pending = poll(&a, &token, &alice);
    let ended = async {
        let held = b.state.connections.get(&token).expect("B holds it");
        let before = held.attachments();
        crate::helpers::eventually(SPREAD, "the poll from A to reach B", || {
            held.attachments() > before
        })
        .await;
        delete(&c, &token, &alice).await
    };
    let (pending, ended) = tokio::join!(pending, ended);
    assert_eq!(ended.status, 202);
    assert_eq!(pending.status, 204);
    crate::helpers::eventually(SPREAD, "the connection to leave B", || {
        b.connection_count() == 0
    })
    .await;
    assert_eq!(poll(&c, &token, &alice).await.status, 404);
    assert_eq!(forwarded(&b, "adopt") + forwarded(&b, "poll"), 1);
    assert!(forwarded(&a, "poll") >= 2 && forwarded(&c, "send") >= 2);
    assert_eq!(forwarded(&c, "delete"), 1);
}

/// Reads `stream` until its text holds `wanted`.
async fn read_until(
    stream: &mut (impl futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin),
    seen: &mut String,
    wanted: &str,
) {
    while !seen.contains(wanted) {
        let chunk = tokio::time::timeout(SPREAD, stream.next())
            .await
            .unwrap_or_else(|_| panic!("waited for {wanted:?}; read {seen:?}"))
            .expect("the stream goes on")
            .expect("the stream does not fail");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[actix_web::test]
async fn an_event_stream_on_one_node_takes_sends_posted_to_the_others() {
    let (a, b, c) = nodes("sse-anywhere").await;
    let alice = user_token("alice");
    let (_, token) = negotiate(&a, &alice, "").await;
    let response = b
        .http
        .get(hub_url(&b, &token))
        .bearer_auth(&alice)
        .insert_header((ACCEPT, "text/event-stream"))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.boxed_local();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, ":\r\n").await;

    assert_eq!(send(&a, &token, &alice, JSON_HANDSHAKE).await.status, 200);
    read_until(&mut stream, &mut seen, "data: {}\u{1e}").await;
    assert_eq!(
        send(&c, &token, &alice, &echo("s1", "from C")).await.status,
        200
    );
    read_until(&mut stream, &mut seen, "\"result\":\"from C\"").await;
    assert_eq!(
        send(&a, &token, &alice, &echo("s2", "from A")).await.status,
        200
    );
    read_until(&mut stream, &mut seen, "\"result\":\"from A\"").await;
    // SSE has no DELETE, wherever it is asked.
    assert_eq!(delete(&c, &token, &alice).await.status, 400);
}

#[actix_web::test]
async fn a_refresh_on_another_node_extends_the_connection_where_it_lives() {
    let (a, b, c) = nodes("refresh-anywhere").await;
    let alice = user_token("alice");
    let (_, token) = negotiate(&a, &alice, "").await;
    let mut client = b
        .connect(&format!("?id={token}"), Some(&alice), None)
        .await
        .expect("upgrade accepted");
    client.handshake().await;

    let later = now() + 7_200;
    let fresh = token_expiring_at("alice", &["user"], later);
    let refreshed = refresh(&c, &token, &fresh).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let lifetime = serde_json::from_slice::<Value>(&refreshed.body).expect("json")
        ["tokenLifetimeSeconds"]
        .as_i64()
        .expect("a lifetime");
    assert!((7_190..=7_200).contains(&lifetime), "{lifetime}");
    let held = b.state.connections.get(&token).expect("B holds it");
    assert_eq!(held.expires_at(), later);
    assert_eq!(forwarded(&c, "refresh"), 1);

    // Another user's fresh token is refused by the owner, as locally.
    let bobs = token_expiring_at("bob", &["user"], later);
    let refused = refresh(&a, &token, &bobs).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    client.assert_echo("still open").await;
}

#[actix_web::test]
async fn another_users_token_is_refused_and_unknown_tokens_are_not_found_on_any_node() {
    let (a, b, _c) = nodes("adopt-refusals").await;
    let (_, token) = negotiate(&a, &user_token("alice"), "").await;
    let bob = user_token("bob");
    assert_eq!(
        b.connect(&format!("?id={token}"), Some(&bob), None)
            .await
            .err(),
        Some(403)
    );
    // As for a local mismatch, the connection is closed: alice cannot use it either.
    assert_eq!(poll(&b, &token, &user_token("alice")).await.status, 404);
    for unknown in ["node-a.not-a-token", "no-node-named", "node-b.not-a-token"] {
        assert_eq!(
            b.connect(&format!("?id={unknown}"), Some(&bob), None)
                .await
                .err(),
            Some(404),
            "{unknown}"
        );
        assert_eq!(poll(&b, unknown, &bob).await.status, 404, "{unknown}");
        assert_eq!(send(&a, unknown, &bob, b"").await.status, 404, "{unknown}");
    }
}

#[actix_web::test]
async fn two_nodes_racing_to_adopt_one_connection_leave_exactly_one_transport() {
    let (a, b, c) = nodes("adopt-race").await;
    let alice = user_token("alice");
    for round in 0..8 {
        let (_, token) = negotiate(&a, &alice, "").await;
        let query = format!("?id={token}");
        let (on_b, on_c) = tokio::join!(
            b.connect(&query, Some(&alice), None),
            c.connect(&query, Some(&alice), None)
        );
        let (mut winner, loser) = match (on_b, on_c) {
            (Ok(client), Err(status)) | (Err(status), Ok(client)) => (client, status),
            (b, c) => panic!(
                "round {round}: exactly one must win: B {:?}, C {:?}",
                b.err(),
                c.err()
            ),
        };
        // What a second socket on a local connection gets.
        assert_eq!(loser, 409, "round {round}");
        winner.handshake().await;
        winner.assert_echo("the one").await;
        winner.close().await;
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[actix_web::test]
async fn while_redis_is_down_a_request_on_another_nodes_connection_is_503_then_it_works_again() {
    // A shared PostgreSQL store: its feed carries revocations, so tokens are still checked
    // while Redis is down (without it the token check itself would refuse first).
    let redis = RedisServer::start();
    let (url, prefix) = (redis.url(), prefix("sticky-outage"));
    let db = crate::postgres::fresh_database().await;
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b"] {
        let server = crate::ws_client::spawn_hub(&[
            ("SIGNET__CLUSTER__REDIS_URL", url.as_str()),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix.as_str()),
            ("SIGNET__CLUSTER__NODE_ID", id),
            ("SIGNET__STORE__URL", db.as_str()),
            ("SIGNET__STORE__MAX_CONNECTIONS", "4"),
        ])
        .await;
        nodes.push(crate::cluster::joined(server).await);
    }
    let b = nodes.pop().expect("two nodes");
    let a = nodes.pop().expect("two nodes");
    let alice = user_token("alice");
    let (_, token) = negotiate(&a, &alice, "").await;

    redis.stop();
    let refused = poll(&b, &token, &alice).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let body: Value = serde_json::from_slice(&refused.body).expect("a JSON error");
    assert_eq!(body["error"], "cluster_unavailable", "{body}");
    // Nothing moved: the connection is still A's.
    assert_eq!((a.connection_count(), b.connection_count()), (1, 0));

    redis.restart();
    // Pub/sub is at most once: wait until both nodes listen and publish again (their presence
    // is back in the emptied Redis), so that no request or answer is lost on the way.
    let listening = format!("PUBSUB NUMSUB {prefix}:forward:node-a {prefix}:forward:node-b");
    let present = format!("ZRANGE {prefix}:home:nodes 0 -1");
    crate::helpers::eventually(3 * SPREAD, "both nodes back on Redis", || {
        let nodes = redis.command(&present);
        redis.command(&listening).matches(":1\r\n").count() == 2
            && nodes.contains("node-a")
            && nodes.contains("node-b")
    })
    .await;
    let deadline = tokio::time::Instant::now() + 3 * SPREAD;
    loop {
        let answer = poll(&b, &token, &alice).await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((a.connection_count(), b.connection_count()), (0, 1));
}

#[actix_web::test]
async fn the_expired_opening_token_of_a_refreshed_connection_still_works_through_other_nodes() {
    let (a, b, c) = nodes("expired-opening").await;
    let expires = now() + 2;
    let opening = token_expiring_at("alice", &["user"], expires);
    let (_, token) = negotiate(&a, &opening, "").await;
    assert_eq!(poll(&b, &token, &opening).await.status, 200);
    assert_eq!(send(&c, &token, &opening, JSON_HANDSHAKE).await.status, 200);
    let handshake = poll(&a, &token, &opening).await;
    assert_eq!((handshake.status, &handshake.body[..]), (200, HANDSHAKE_OK));
    // Refreshed (here on C, forwarded to B) before the opening token expires.
    let fresh = token_expiring_at("alice", &["user"], now() + 3_600);
    let refreshed = refresh(&c, &token, &fresh).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    crate::helpers::wait_until_expired(expires).await;

    // The official clients keep sending the opening token: the owner accepts it.
    let sent = send(&c, &token, &opening, &echo("late", "still here")).await;
    assert_eq!(sent.status, 200, "{sent:?}");
    let answer = poll(&a, &token, &opening).await;
    assert_eq!(
        records(&answer.body)[0]["result"],
        "still here",
        "{answer:?}"
    );
    // Another expired token of the same user (another jti) is not the opening one: 401.
    let other = token_expiring_at("alice", &["user"], expires);
    assert_eq!(send(&c, &token, &other, b"").await.status, 401);
}

#[actix_web::test]
async fn a_401_from_the_owner_keeps_its_challenge_on_the_node_that_forwarded_it() {
    let (a, b, _c) = nodes("forwarded-challenge").await;
    let expires = now() + 2;
    let opening = token_expiring_at("alice", &["user"], expires);
    let (_, token) = negotiate(&a, &opening, "").await;
    assert_eq!(poll(&a, &token, &opening).await.status, 200);
    crate::helpers::wait_until_expired(expires).await;

    // An expired token that is not the connection's opening one: B cannot judge it (it holds
    // no connection) and forwards the send; A, the owner, refuses it.
    let other = token_expiring_at("alice", &["user"], expires);
    let local = send(&a, &token, &other, b"").await;
    let sends = forwarded(&b, "send");
    let refused = send(&b, &token, &other, b"").await;
    assert_eq!(forwarded(&b, "send"), sends + 1, "forwarded to the owner");
    assert_eq!((refused.status, local.status), (401, 401), "{refused:?}");
    let body: Value = serde_json::from_slice(&refused.body).expect("a JSON error");
    assert_eq!(body["error"], "invalid_token", "{body}");
    // RFC 9110: a 401 carries its challenge, the one the owner would have answered itself.
    assert!(local.challenge.is_some(), "{local:?}");
    assert_eq!(refused.challenge, local.challenge);
}

#[actix_web::test]
async fn a_user_at_the_forwarded_request_limit_waits_and_other_users_do_not() {
    let redis = shared();
    let prefix = prefix("forwarded-per-user");
    let mut servers = Vec::new();
    for id in ["node-a", "node-b"] {
        let server = crate::ws_client::spawn_hub(&[
            ("SIGNET__CLUSTER__REDIS_URL", redis.url().as_str()),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix.as_str()),
            ("SIGNET__CLUSTER__NODE_ID", id),
            ("SIGNET__CLUSTER__MAX_FORWARDED_PER_USER", "1"),
        ])
        .await;
        servers.push(crate::cluster::joined(server).await);
    }
    let (a, b) = (&servers[0], &servers[1]);
    let (alice, bob) = (user_token("alice"), user_token("bob"));
    let polling = |bearer: &str| {
        let bearer = bearer.to_string();
        async move {
            let (_, token) = negotiate(a, &bearer, "").await;
            assert_eq!(poll(a, &token, &bearer).await.status, 200);
            token
        }
    };
    let (held, other, bobs) = (
        polling(&alice).await,
        polling(&alice).await,
        polling(&bob).await,
    );

    // Alice's poll forwarded from B waits on A (nothing to deliver): her one request there.
    let received = |server: &HubServer| {
        let metrics = server.state.metrics.render();
        let value = metrics
            .lines()
            .find_map(|line| line.strip_prefix("signet_cluster_receives "))
            .and_then(|v| v.parse::<u64>().ok());
        value.unwrap_or(0)
    };
    let before = received(a);
    let meanwhile = async {
        crate::helpers::eventually(SPREAD, "A to hold the forwarded poll", || {
            received(a) > before
        })
        .await;
        // Another request of hers through B is refused, to be retried; Bob's goes through.
        let refused = send(b, &other, &alice, &echo("1", "x")).await;
        assert_eq!(refused.status, 429, "{refused:?}");
        let body: Value = serde_json::from_slice(&refused.body).expect("a JSON error");
        assert_eq!(body["error"], "too_many_forwarded_requests", "{body}");
        assert_eq!(send(b, &bobs, &bob, JSON_HANDSHAKE).await.status, 200);
        // Her poll ends (a DELETE on A): the retry goes through.
        assert_eq!(delete(a, &held, &alice).await.status, 202);
    };
    let (ended, ()) = tokio::join!(poll(b, &held, &alice), meanwhile);
    assert_eq!(ended.status, 204, "{ended:?}");
    let deadline = tokio::time::Instant::now() + SPREAD;
    loop {
        let sent = send(b, &other, &alice, JSON_HANDSHAKE).await;
        if sent.status == 200 {
            break;
        }
        assert_eq!(sent.status, 429, "{sent:?}");
        assert!(tokio::time::Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The records `client` gets, pings and Acks left out, until one satisfies `last`.
async fn records_until(
    client: &mut crate::ws_client::RawClient,
    last: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    while !seen.last().is_some_and(&last) {
        let record = client.next_message(SPREAD).await;
        if record["type"] != 8 {
            seen.push(record);
        }
    }
    seen
}

fn invocation(id: &str, text: &str) -> Value {
    json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": [text]})
}

async fn send_to(server: &HubServer, id: &str, text: &str) {
    let hub = server.state.hubs.get("home").expect("home hub").clone();
    let message = Arc::new(SerializedHubMessage::new(HubMessage::invocation(
        "SystemMessage",
        vec![json!(text)],
    )));
    hub.lifetime
        .send_connection(id, message)
        .await
        .expect("a send to the connection");
}

#[actix_web::test]
async fn a_stateful_reconnect_on_another_node_is_tunnelled_to_the_connection_and_resumes() {
    let (a, b, _c) = nodes("ws-tunnel").await;
    let alice = user_token("alice");
    let (id, token, mut first) = stateful_socket(&a, &alice).await;
    first.send_record(invocation("1", "one")).await;
    first.completion("1").await;
    // The network drops the socket; A keeps the connection for the client to come back.
    drop(first);
    let connection = a.state.connections.get(&token).expect("held on A");
    detached(&connection).await;
    send_to(&a, &id, "while away").await;

    // The client comes back through node B: tunnelled to A, it resumes where it was.
    let mut second = b
        .connect(&format!("?id={token}"), Some(&alice), None)
        .await
        .expect("the upgrade on node B is tunnelled");
    let system = |text: &'static str| {
        move |r: &Value| r["target"] == "SystemMessage" && r["arguments"][0] == text
    };
    let resumed = records_until(&mut second, system("while away")).await;
    assert_eq!(
        resumed,
        vec![
            json!({"type": 9, "sequenceId": 1}),
            json!({"type": 3, "invocationId": "1", "result": "one"}),
            json!({"type": 1, "target": "SystemMessage", "arguments": ["while away"]}),
        ]
    );
    assert_eq!(forwarded(&b, "tunnel"), 1);
    assert_eq!((a.connection_count(), b.connection_count()), (1, 0));

    // The client resends its message 1 (a duplicate, skipped), then message 2; a send from
    // node B reaches it once, through A.
    second
        .send_text(format!(
            "{}\u{1e}{}\u{1e}{}\u{1e}{}\u{1e}",
            json!({"type": 9, "sequenceId": 1}),
            invocation("1", "one"),
            invocation("2", "two"),
            json!({"type": 8, "sequenceId": 2}),
        ))
        .await;
    let answered = records_until(&mut second, |r| r["invocationId"] == "2").await;
    assert_eq!(
        answered,
        vec![json!({"type": 3, "invocationId": "2", "result": "two"})]
    );
    send_to(&b, &id, "from B").await;
    let later = records_until(&mut second, system("from B")).await;
    assert_eq!(later.len(), 1, "{later:?}");

    // The client's close frame closes the connection on A, which answers with a close frame.
    let ending = second.close_and_wait(SPREAD).await;
    assert_eq!(ending.code, Some(awc::ws::CloseCode::Normal), "{ending:?}");
    a.wait_for_connections(0).await;
}

/// A stateful-reconnect connection on `server` (version 2 handshake done): (connection id,
/// token, its socket).
async fn stateful_socket(
    server: &HubServer,
    bearer: &str,
) -> (String, String, crate::ws_client::RawClient) {
    let (id, token) = negotiate(server, bearer, "&useStatefulReconnect=true").await;
    let mut socket = server
        .connect(&format!("?id={token}"), Some(bearer), None)
        .await
        .expect("the upgrade on the negotiating node");
    socket
        .send_text("{\"protocol\":\"json\",\"version\":2}\u{1e}")
        .await;
    assert_eq!(socket.next_record(SPREAD).await, json!({}));
    (id, token, socket)
}

/// Waits until no transport is attached to `connection` (it stays, resumable).
async fn detached(connection: &signet::connection::Connection) {
    crate::helpers::eventually(SPREAD, "the transport to be detached", || {
        !connection.is_attached()
    })
    .await;
    assert!(!connection.is_closed());
}

/// A socket on `server` for `connection`, which another node holds: it resumes (a Sequence
/// first) through a tunnel, once the owner has attached it.
async fn tunnelled(
    server: &HubServer,
    token: &str,
    bearer: &str,
    connection: &signet::connection::Connection,
) -> crate::ws_client::RawClient {
    let mut client = server
        .connect(&format!("?id={token}"), Some(bearer), None)
        .await
        .expect("the upgrade is tunnelled");
    let first = client.next_record(SPREAD).await;
    assert_eq!(first["type"], 9, "a Sequence first: {first}");
    crate::helpers::eventually(SPREAD, "the tunnel attached on the owner", || {
        connection.is_attached()
    })
    .await;
    client
}

#[actix_web::test]
async fn a_tunnelled_socket_ends_with_its_connection_and_a_dropped_one_leaves_it_resumable() {
    let (a, b, c) = nodes("ws-tunnel-ends").await;
    let alice = user_token("alice");
    let (_id, token, socket) = stateful_socket(&a, &alice).await;
    drop(socket);
    let connection = a.state.connections.get(&token).expect("held on A");
    detached(&connection).await;

    // Dropped on B: A detaches the tunnel and keeps the connection for the client.
    let on_b = tunnelled(&b, &token, &alice, &connection).await;
    drop(on_b);
    detached(&connection).await;

    // Back through C; the connection closing on A closes the socket on C with its Close.
    let mut on_c = tunnelled(&c, &token, &alice, &connection).await;
    connection.close(signet::connection::CloseReason::Kicked);
    let ending = on_c.expect_close(SPREAD).await;
    let close = ending.close_message.expect("the hub Close message");
    assert_eq!(
        close["error"], "Disconnected by an administrator",
        "{close}"
    );
    assert_eq!(ending.code, Some(awc::ws::CloseCode::Normal));
    a.wait_for_connections(0).await;
    assert_eq!(forwarded(&b, "tunnel") + forwarded(&c, "tunnel"), 2);
}
