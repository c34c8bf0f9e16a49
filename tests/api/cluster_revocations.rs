//! Revocation across nodes that share no store (each node here has its own SQLite store): what
//! one node revokes reaches the others over Redis within a second, closes their connections
//! and is refused there; a node that missed it while its Redis connection was cut reloads it,
//! and refuses every token (503) until it has. The last test shares a PostgreSQL store instead:
//! there a Redis outage refuses nothing, the store's feed carrying revocations alone.

use crate::cluster::{joined, node, SPREAD};
use crate::helpers::user_token;
use crate::proxy::Proxy;
use crate::redis_server::{prefix, shared, RedisServer};
use crate::user_limits::{device, login, post};
use crate::ws_client::{admin_token, HubServer, RawClient};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What the issue asks: a revocation on one node closes the connections it names on every
/// other within this.
const WITHIN: Duration = Duration::from_secs(1);

/// A second login of an existing user on `server`: `(access, refresh)`.
async fn log_in(server: &HubServer, username: &str) -> (String, String) {
    let answer = post(
        server,
        "/api/auth/login",
        None,
        json!({"username": username, "password": crate::helpers::TEST_PASSWORD}),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let token = |name: &str| answer.body[name].as_str().unwrap_or_default().to_string();
    (token("accessToken"), token("refreshToken"))
}

/// `POST /api/auth/refresh` with `refresh`.
async fn present(server: &HubServer, refresh: &str) -> crate::ws_client::HttpAnswer {
    post(
        server,
        "/api/auth/refresh",
        None,
        json!({ "refreshToken": refresh }),
    )
    .await
}

/// Waits for `client`'s connection to be closed as revoked; how long that took since `since`.
async fn closed_as_revoked(client: &mut RawClient, since: Instant) -> Duration {
    let ending = client.expect_close(SPREAD).await;
    let took = since.elapsed();
    let message = ending.close_message.unwrap_or(Value::Null);
    assert!(
        message["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Authentication revoked")),
        "{message}"
    );
    assert_ne!(message["allowReconnect"], json!(true), "{message}");
    took
}

/// What negotiating with `token` on `server` answers: the status and the error code.
async fn negotiated(server: &HubServer, token: &str) -> (u16, String) {
    let answer = server
        .negotiate("?negotiateVersion=1", Some(token), None)
        .await;
    let error = answer.body["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (answer.status, error)
}

#[actix_web::test]
async fn logout_and_refresh_token_reuse_on_a_close_the_session_on_b_within_a_second() {
    let (redis, prefix) = (shared(), prefix("logout"));
    let a = node(&redis.url(), &prefix, "a").await;
    let b = node(&redis.url(), &prefix, "b").await;
    let first = login(&a, "walker").await;
    let (second, refresh) = log_in(&a, "walker").await;
    let mut first_on_b = b.open(&first).await;
    let mut second_on_b = b.open(&second).await;

    // Logout on A: B, which never saw the user (its store has none), closes and refuses.
    let started = Instant::now();
    let out = post(&a, "/api/auth/logout", Some(&first), json!({})).await;
    assert_eq!(out.status, 204, "{:?}", out.body);
    let took = closed_as_revoked(&mut first_on_b, started).await;
    assert!(took < WITHIN, "closed on B after {took:?}");
    assert_eq!(negotiated(&b, &first).await, (401, "invalid_token".into()));
    second_on_b.assert_echo("another session lives on").await;

    // The refresh token presented twice on A: the session ends on B too.
    let rotated = present(&a, &refresh).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let started = Instant::now();
    let reused = present(&a, &refresh).await;
    assert_eq!(
        reused.body["error"], "refresh_token_reused",
        "{:?}",
        reused.body
    );
    let took = closed_as_revoked(&mut second_on_b, started).await;
    assert!(took < WITHIN, "closed on B after {took:?}");
    assert_eq!(negotiated(&b, &second).await, (401, "invalid_token".into()));
    println!("logout and reuse reached the other node in {took:?}");
}

#[actix_web::test]
async fn an_admin_revocation_and_a_device_removal_on_a_close_on_b_within_a_second() {
    let (redis, prefix) = (shared(), prefix("admin-revoke"));
    let a = node(&redis.url(), &prefix, "a").await;
    let b = node(&redis.url(), &prefix, "b").await;
    let owner = login(&a, "keeper").await;
    let (device_id, device_token) = device(&a, &owner, "lamp").await;
    let mut lamp_on_b = b.open(&device_token).await;
    let mut owner_on_b = b.open(&owner).await;
    let bystander = user_token("bystander");
    let mut bystander_on_b = b.open(&bystander).await;

    let started = Instant::now();
    let removed = a
        .http
        .delete(a.url(&format!("/api/devices/{device_id}")))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("answered");
    assert_eq!(removed.status().as_u16(), 204);
    let took = closed_as_revoked(&mut lamp_on_b, started).await;
    assert!(took < WITHIN, "device closed on B after {took:?}");
    assert_eq!(negotiated(&b, &device_token).await.0, 401);

    let started = Instant::now();
    let revoked = post(
        &a,
        "/api/admin/users/keeper/revoke",
        Some(&admin_token("the-admin")),
        json!({}),
    )
    .await;
    assert_eq!(revoked.status, 204, "{:?}", revoked.body);
    let took = closed_as_revoked(&mut owner_on_b, started).await;
    assert!(took < WITHIN, "user closed on B after {took:?}");
    assert_eq!(negotiated(&b, &owner).await.0, 401);
    bystander_on_b.assert_echo("untouched").await;
}

#[actix_web::test]
async fn a_node_cut_from_redis_refuses_every_token_and_reloads_what_it_missed() {
    let redis = shared();
    let prefix = prefix("missed");
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), redis.port()).await;
    let a = node(&redis.url(), &prefix, "a").await;
    let via_proxy = format!("redis://{}/", proxy.listen);
    let b = node(&via_proxy, &prefix, "b").await;
    let walker = login(&a, "cut-walker").await;
    let mut walker_on_b = b.open(&walker).await;
    let other = user_token("cut-bystander");

    // B's connections to Redis are cut: it refuses every token it does not know revoked.
    proxy.cut();
    crate::helpers::eventually(SPREAD, "B to lose its feed", || {
        !b.state.auth.revocations().in_sync()
    })
    .await;
    assert_eq!(
        negotiated(&b, &other).await,
        (503, "store_unavailable".into())
    );
    // A revokes meanwhile: the publish cannot reach B.
    let out = post(&a, "/api/auth/logout", Some(&walker), json!({})).await;
    assert_eq!(out.status, 204, "{:?}", out.body);
    assert_eq!(negotiated(&a, &walker).await.0, 401);

    // Back: B resubscribes, reloads from Redis, refuses the token and closes its connection.
    let started = Instant::now();
    let _restored = Proxy::start(proxy.listen, redis.port()).await;
    let b = joined(b).await;
    assert_eq!(negotiated(&b, &walker).await, (401, "invalid_token".into()));
    let took = closed_as_revoked(&mut walker_on_b, started).await;
    println!("B in sync again {took:?} after the cut ended");
    assert_eq!(negotiated(&b, &other).await.0, 200);
}

#[actix_web::test]
async fn a_revocation_made_while_redis_is_down_reaches_every_node_once_it_is_back() {
    // A Redis of this test's own: it is stopped, and restarts empty.
    let redis = RedisServer::start();
    let prefix = prefix("redis-down");
    let a = node(&redis.url(), &prefix, "a").await;
    let b = node(&redis.url(), &prefix, "b").await;
    login(&a, "down-walker").await;
    let (walker, refresh) = log_in(&a, "down-walker").await;
    let mut walker_on_b = b.open(&walker).await;
    let rotated = present(&a, &refresh).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);

    redis.stop();
    crate::helpers::eventually(SPREAD, "both nodes to lose their feed", || {
        !a.state.auth.revocations().in_sync() && !b.state.auth.revocations().in_sync()
    })
    .await;
    let bystander = user_token("down-bystander");
    assert_eq!(
        negotiated(&b, &bystander).await,
        (503, "store_unavailable".into())
    );
    // Every token is refused (logging out too), but a refresh token presented twice needs
    // none: the session ends on A at once, and waits for Redis to reach the others.
    let reused = present(&a, &refresh).await;
    assert_eq!(
        reused.body["error"], "refresh_token_reused",
        "{:?}",
        reused.body
    );
    assert_eq!(negotiated(&a, &walker).await.0, 401);

    redis.restart();
    let b = joined(b).await;
    let _a = joined(a).await;
    let closed = closed_as_revoked(&mut walker_on_b, Instant::now()).await;
    assert!(closed < SPREAD);
    assert_eq!(negotiated(&b, &walker).await, (401, "invalid_token".into()));
    assert_eq!(negotiated(&b, &bystander).await.0, 200);

    // A node joining later, with a store of its own, learns it from Redis.
    let c = node(&redis.url(), &prefix, "c").await;
    assert_eq!(negotiated(&c, &walker).await, (401, "invalid_token".into()));
}

#[actix_web::test]
async fn with_a_shared_store_a_redis_outage_stops_no_authentication_and_revocations_still_cross() {
    // A Redis of this test's own (stopped mid-test) and one PostgreSQL database for both nodes.
    let redis = RedisServer::start();
    let (prefix, db) = (prefix("outage"), crate::postgres::fresh_database().await);
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let env = [
            ("SIGNET__CLUSTER__REDIS_URL", redis.url()),
            ("SIGNET__CLUSTER__CHANNEL_PREFIX", prefix.clone()),
            ("SIGNET__CLUSTER__NODE_ID", id.to_string()),
            ("SIGNET__STORE__URL", db.clone()),
            ("SIGNET__STORE__MAX_CONNECTIONS", "4".to_string()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push(joined(crate::ws_client::spawn_hub(&env).await).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let first = login(a, "steady").await;
    redis.stop();

    // Redis gone: the shared store's feed still tells every revocation, so nothing is refused.
    let (second, _) = log_in(b, "steady").await;
    let mut first_on_b = b.open(&first).await;
    first_on_b
        .assert_echo("a new connection while Redis is down")
        .await;
    let (status, body) = crate::cluster::readyz(b).await;
    assert_eq!(
        (status, &body["failing"]),
        (503, &json!(["redis"])),
        "{body}"
    );

    // A logout on A still closes the session on B, through PostgreSQL.
    let started = Instant::now();
    let out = post(a, "/api/auth/logout", Some(&first), json!({})).await;
    assert_eq!(out.status, 204, "{:?}", out.body);
    let took = closed_as_revoked(&mut first_on_b, started).await;
    assert!(took < WITHIN, "closed on B after {took:?}");
    assert_eq!(negotiated(b, &first).await, (401, "invalid_token".into()));
    assert_eq!(negotiated(a, &second).await.0, 200);
}
