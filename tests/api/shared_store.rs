//! Several nodes on one PostgreSQL database, and that database going away: the users, sessions
//! and refresh rotation every node shares, and outages answered 503 `store_unavailable` fast
//! and recovered from without a restart.

use crate::helpers::*;
use crate::postgres::{cluster, fresh_database};
use crate::proxy::Proxy;
use std::time::{Duration, Instant};

async fn node(url: &str, extra_env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(&postgres_env(url, extra_env)).await
}

#[actix_web::test]
async fn a_user_added_on_one_node_logs_in_on_the_other() {
    let url = fresh_database().await;
    let a = node(&url, &[]).await;
    let b = node(&url, &[]).await;
    a.create_user("hana", &["user"], TEST_PASSWORD).await;
    let login = b.login("hana", TEST_PASSWORD).await;
    assert_eq!(login.status, 200, "{login:?}");
    // A session opened on B refreshes on A.
    let refreshed = a.refresh(&login.str("refreshToken")).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
}

#[actix_web::test]
async fn one_refresh_token_redeemed_on_two_nodes_at_once_rotates_once() {
    let url = fresh_database().await;
    let a = node(&url, &[]).await;
    let b = node(&url, &[]).await;
    a.create_user("ivo", &["user"], TEST_PASSWORD).await;
    for round in 0..5 {
        let login = a.login("ivo", TEST_PASSWORD).await;
        assert_eq!(login.status, 200, "{login:?}");
        let token = login.str("refreshToken");
        let (on_a, on_b) = tokio::join!(a.refresh(&token), b.refresh(&token));
        let mut outcomes = [
            (on_a.status, on_a.error().to_string()),
            (on_b.status, on_b.error().to_string()),
        ];
        outcomes.sort();
        // One rotation wins and the other is caught as a reuse, which revokes the session. The
        // winner answers 200, or, when that revocation lands before it has issued its tokens
        // (under load), `invalid_refresh_token` (src/identity/sessions.rs): never two
        // successes, never two reuses.
        let won_or_cut_short = [
            (200, String::new()),
            (401, "invalid_refresh_token".to_string()),
        ];
        assert!(
            won_or_cut_short.contains(&outcomes[0])
                && outcomes[1] == (401, "refresh_token_reused".to_string()),
            "round {round}: {on_a:?} {on_b:?}"
        );
    }
}

/// A fresh database and a proxy in front of it: `(proxy, direct URL, URL through the proxy)`.
async fn database_behind_a_proxy() -> (Proxy, String, String) {
    let direct = fresh_database().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), cluster().port()).await;
    let proxied = direct.replace(
        &format!("127.0.0.1:{}", cluster().port()),
        &proxy.listen.to_string(),
    );
    (proxy, direct, proxied)
}

#[actix_web::test]
async fn a_database_outage_answers_503_quickly_and_recovers_without_a_restart() {
    let (proxy, _, url) = database_behind_a_proxy().await;
    let app = node(&url, &[("SIGNET__STORE__ACQUIRE_TIMEOUT_SECS", "1")]).await;
    app.create_user("jo", &["user"], TEST_PASSWORD).await;
    assert_eq!(app.login("jo", TEST_PASSWORD).await.status, 200);
    assert_eq!(app.get("/readyz", None).await.status, 200);

    proxy.cut();
    let started = Instant::now();
    let login = app.login("jo", TEST_PASSWORD).await;
    assert_eq!(
        (login.status, login.error()),
        (503, "store_unavailable"),
        "{login:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        !login.body.to_string().contains("127.0.0.1"),
        "the cause stays in the log: {login:?}"
    );
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_ne!(ready.body["checks"]["store"], "ok", "{ready:?}");
    assert_eq!(ready.body["checks"]["revocations"], "lost", "{ready:?}");

    // The database comes back on the same address: the same server recovers.
    let _restored = Proxy::start(proxy.listen, cluster().port()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let login = app.login("jo", TEST_PASSWORD).await;
        if login.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {login:?}");
        // Paces retried logins until the database is back, not a fixed wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The revocation feed reconnects on its own schedule.
    loop {
        let ready = app.get("/readyz", None).await;
        if ready.status == 200 {
            assert_eq!(ready.body["checks"].get("revocations"), None, "{ready:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {ready:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn logout_on_one_node_closes_the_websocket_on_the_other_within_a_second() {
    let url = fresh_database().await;
    let a = node(&url, &[]).await;
    let b = crate::ws_client::spawn_hub(&postgres_env(&url, &[])).await;
    a.create_user("lu", &["user"], TEST_PASSWORD).await;
    let login = a.login("lu", TEST_PASSWORD).await;
    let access = login.str("accessToken");
    let mut on_b = b.open(&access).await;

    let logout = a
        .post("/api/auth/logout", Some(&access), &serde_json::json!({}))
        .await;
    assert!(logout.status < 300, "{logout:?}");
    let started = Instant::now();
    on_b.expect_close(Duration::from_secs(1)).await;
    assert!(started.elapsed() <= Duration::from_secs(1));
    // And B refuses the logged-out token from now on.
    let negotiate = b.negotiate("", Some(&access), None).await;
    assert_eq!(negotiate.status, 401);
}

#[actix_web::test]
async fn store_copy_moves_a_sqlite_store_to_postgres_and_is_idempotent() {
    let old = spawn_app().await;
    let kept = old.user_session("mia").await;
    let ended = old.login("mia", TEST_PASSWORD).await;
    let logout = old
        .post(
            "/api/auth/logout",
            Some(&ended.str("accessToken")),
            &serde_json::json!({}),
        )
        .await;
    assert!(logout.status < 300, "{logout:?}");
    let dir = old.data_dir.path();
    let from = format!(
        "sqlite://{}",
        dir.join(signet::store::DATABASE_FILE).display()
    );
    let url = fresh_database().await;
    let copy = |extra: &[&str]| {
        let args = [&["store", "copy", "--from", &from, "--to", &url][..], extra].concat();
        crate::cli::signet(dir, None, &args, None)
    };

    let first = crate::cli::ok(&copy(&[]));
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "denied_tokens",
        "revoked_sessions",
    ] {
        assert!(first.contains(table), "{first}");
    }
    assert!(first.contains("copied 8 tables"), "{first}");
    // A second run refuses the filled target, and with --force copies nothing new.
    let refused = copy(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    let again = crate::cli::ok(&copy(&["--force"]));
    assert!(again.contains(" 0 new in the target\n"), "{again}");
    assert!(
        !again
            .lines()
            .any(|l| l.contains("rows read") && !l.ends_with(" 0 new in the target")),
        "{again}"
    );

    // A node on the copy: same users, sessions and revocations.
    let new = node(&url, &[]).await;
    assert_eq!(new.login("mia", TEST_PASSWORD).await.status, 200);
    let refreshed = new.refresh(kept["refreshToken"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    assert_eq!(new.me(Some(&ended.str("accessToken"))).await.0, 401);
    assert_eq!(new.refresh(&ended.str("refreshToken")).await.status, 401);
}

#[actix_web::test]
async fn a_node_reaches_postgres_over_verified_tls() {
    use sqlx::Connection;
    let url = fresh_database().await;
    let ca = cluster().ca_file();
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let mut direct = sqlx::PgConnection::connect(&tls_url)
        .await
        .expect("a TLS connection");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut direct)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the connection is encrypted");
    // A certificate from another CA is refused.
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        other.path(),
        crate::test_ca::TestCa::new("other").cert_pem(),
    )
    .unwrap();
    let wrong = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        other.path().display()
    );
    assert!(sqlx::PgConnection::connect(&wrong).await.is_err());

    let app = node(&tls_url, &[]).await;
    app.create_user("ned", &["user"], TEST_PASSWORD).await;
    assert_eq!(app.login("ned", TEST_PASSWORD).await.status, 200);
}

/// Asks `negotiate` on `server` with `token` until it answers `status`; fails after `wait`.
async fn negotiate_until(
    server: &crate::ws_client::HubServer,
    token: &str,
    status: u16,
    wait: Duration,
) -> crate::ws_client::HttpAnswer {
    let deadline = Instant::now() + wait;
    loop {
        let answer = server.negotiate("", Some(token), None).await;
        if answer.status == status {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after {wait:?}: {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Node B reaches the database through a proxy the test cuts; node A keeps it. While B has lost
/// the revocation feed it refuses every token (503 `store_unavailable`): a logout on A could
/// not reach it. Its live WebSockets keep working meanwhile, and when the feed is back B
/// reloads the records, closes the connection that was logged out on A, and accepts tokens
/// again without a restart.
#[actix_web::test]
async fn a_node_cut_off_from_the_revocation_feed_refuses_tokens_until_it_has_caught_up() {
    let (proxy, direct, proxied) = database_behind_a_proxy().await;
    let a = node(&direct, &[]).await;
    let b = crate::ws_client::spawn_hub(&postgres_env(
        &proxied,
        &[("SIGNET__STORE__ACQUIRE_TIMEOUT_SECS", "1")],
    ))
    .await;
    a.create_user("oli", &["user"], TEST_PASSWORD).await;
    a.create_user("pia", &["user", "admin"], TEST_PASSWORD)
        .await;
    let oli = a.login("oli", TEST_PASSWORD).await.str("accessToken");
    let pia = a.login("pia", TEST_PASSWORD).await.str("accessToken");
    let mut oli_on_b = b.open(&oli).await;
    let mut pia_on_b = b.open(&pia).await;
    assert_eq!(b.negotiate("", Some(&pia), None).await.status, 200);

    proxy.cut();
    // Fail closed: a valid token is refused as soon as the feed is lost.
    let refused = negotiate_until(&b, &pia, 503, Duration::from_secs(1)).await;
    assert_eq!(
        refused.body["error"], "store_unavailable",
        "{}",
        refused.body
    );
    assert_eq!(
        b.connect("", Some(&pia), None).await.err(),
        Some(503),
        "a new WebSocket is refused too"
    );
    let gauge = |server: &crate::ws_client::HubServer| {
        let metrics = server.state.metrics.render();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("signet_revocation_feed_lost "))
            .map(str::to_string)
    };
    assert_eq!(gauge(&b).as_deref(), Some("1"));
    // Live connections admitted before keep working for what needs no store.
    pia_on_b.assert_echo("during the outage").await;
    pia_on_b
        .invoke("b1", "BroadcastMessage", serde_json::json!(["still here"]))
        .await;
    let message = oli_on_b.next_message(Duration::from_secs(1)).await;
    assert_eq!(message["arguments"][0], "still here", "{message}");
    let mut to_pia = [
        pia_on_b.next_message(Duration::from_secs(1)).await,
        pia_on_b.next_message(Duration::from_secs(1)).await,
    ];
    to_pia.sort_by_key(|m| m["type"].as_u64());
    assert_eq!(to_pia[0]["arguments"][0], "still here", "{to_pia:?}");
    assert_eq!(
        (&to_pia[1]["invocationId"], to_pia[1].get("error")),
        (&serde_json::json!("b1"), None),
        "{to_pia:?}"
    );

    // A logout B cannot hear of now.
    let logout = a
        .post("/api/auth/logout", Some(&oli), &serde_json::json!({}))
        .await;
    assert!(logout.status < 300, "{logout:?}");
    oli_on_b.assert_echo("not yet told").await;

    // The database returns: B listens again, reloads, closes what was revoked meanwhile and
    // accepts valid tokens again.
    let _restored = Proxy::start(proxy.listen, cluster().port()).await;
    let ending = oli_on_b.expect_close(Duration::from_secs(10)).await;
    let close = ending.close_message.expect("a Close message");
    assert_eq!(
        close["error"], "Authentication revoked: logged out",
        "{close}"
    );
    negotiate_until(&b, &pia, 200, Duration::from_secs(5)).await;
    assert_eq!(b.negotiate("", Some(&oli), None).await.status, 401);
    assert_eq!(gauge(&b).as_deref(), Some("0"));
    pia_on_b.assert_echo("after the outage").await;
}

/// A silent cut (nothing forwarded, nothing closed) is noticed by the feed's heartbeat: within
/// `feed_heartbeat_secs` + `acquire_timeout_secs` the node refuses tokens, and recovers when the database is
/// reachable again.
#[actix_web::test]
async fn a_silent_network_cut_is_noticed_by_the_feed_heartbeat() {
    let (proxy, _, proxied) = database_behind_a_proxy().await;
    let b = crate::ws_client::spawn_hub(&postgres_env(
        &proxied,
        &[
            ("SIGNET__STORE__ACQUIRE_TIMEOUT_SECS", "1"),
            ("SIGNET__STORE__FEED_HEARTBEAT_SECS", "1"),
        ],
    ))
    .await;
    let token = crate::transport_client::token("quinn", &["user"], 600);
    assert_eq!(b.negotiate("", Some(&token), None).await.status, 200);

    proxy.freeze();
    let started = Instant::now();
    let refused = negotiate_until(&b, &token, 503, Duration::from_secs(4)).await;
    assert_eq!(
        refused.body["error"], "store_unavailable",
        "{}",
        refused.body
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "refused before the heartbeat could have missed: {:?}",
        started.elapsed()
    );

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _restored = Proxy::start(proxy.listen, cluster().port()).await;
    negotiate_until(&b, &token, 200, Duration::from_secs(8)).await;
}

/// Logout on node A closes the user's Server-Sent Events and long-polling connections on node B
/// within a second: each is told why (a Close message) and ends.
#[actix_web::test]
async fn logout_on_one_node_closes_sse_and_long_polling_on_the_other_within_a_second() {
    use crate::transport_client::{
        connection_token, long_polling_connection, records, send, start_poll, EventStream,
        JSON_HANDSHAKE,
    };
    let url = fresh_database().await;
    let a = node(&url, &[]).await;
    let b = node(&url, &[]).await;
    a.create_user("rui", &["user"], TEST_PASSWORD).await;
    let access = a.login("rui", TEST_PASSWORD).await.str("accessToken");

    let sse = connection_token(&b, &access).await;
    let mut events = EventStream::open(&b, Some(&sse), &access).await;
    assert_eq!(events.status, 200);
    events.read_exact(3).await;
    assert_eq!(
        send(&b, Some(&sse), &access, JSON_HANDSHAKE).await.status,
        200
    );
    assert_eq!(events.next_data().await.as_deref(), Some("{}\u{1e}"));
    let polling = long_polling_connection(&b, &access, JSON_HANDSHAKE).await;
    let pending = actix_web::rt::spawn(start_poll(&b, Some(&polling), &access));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logout = a
        .post("/api/auth/logout", Some(&access), &serde_json::json!({}))
        .await;
    assert!(logout.status < 300, "{logout:?}");
    let started = Instant::now();
    let close = events.next_data().await.expect("the Close message");
    let close = &records(close.as_bytes())[0];
    assert_eq!(
        (&close["type"], &close["error"]),
        (
            &serde_json::json!(7),
            &serde_json::json!("Authentication revoked: logged out")
        ),
        "{close}"
    );
    assert_eq!(events.next_event().await, None, "the stream ends");
    let polled = pending.await.expect("the poll task");
    assert_eq!(polled.status, 200, "{polled:?}");
    let close = records(&polled.body).pop().expect("the Close message");
    assert_eq!(
        (&close["type"], &close["error"]),
        (
            &serde_json::json!(7),
            &serde_json::json!("Authentication revoked: logged out")
        ),
        "{close}"
    );
    assert!(
        started.elapsed() <= Duration::from_secs(1),
        "closed after {:?}",
        started.elapsed()
    );
}

/// During a database outage an SSE stream admitted before keeps delivering what the node sends
/// it (a broadcast from a WebSocket on the same node); its sends carry the token, so they are
/// answered 503 `store_unavailable` without ending the connection, and work again once the
/// node has caught up.
#[actix_web::test]
async fn an_event_stream_keeps_receiving_during_an_outage() {
    use crate::transport_client::{
        connection_token, invocation, records, send, EventStream, JSON_HANDSHAKE,
    };
    let (proxy, _, proxied) = database_behind_a_proxy().await;
    let b = node(&proxied, &[("SIGNET__STORE__ACQUIRE_TIMEOUT_SECS", "1")]).await;
    b.create_user("sam", &["user"], TEST_PASSWORD).await;
    b.create_user("tea", &["user", "admin"], TEST_PASSWORD)
        .await;
    let sam = b.login("sam", TEST_PASSWORD).await.str("accessToken");
    let tea = b.login("tea", TEST_PASSWORD).await.str("accessToken");
    let (_, socket) = awc::Client::new()
        .ws(b.url("/hubs/home"))
        .bearer_auth(&tea)
        .connect()
        .await
        .expect("a WebSocket");
    let mut admin = crate::ws_client::RawClient::from_socket(socket);
    admin.handshake().await;
    let id = connection_token(&b, &sam).await;
    let mut events = EventStream::open(&b, Some(&id), &sam).await;
    events.read_exact(3).await;
    assert_eq!(send(&b, Some(&id), &sam, JSON_HANDSHAKE).await.status, 200);
    assert_eq!(events.next_data().await.as_deref(), Some("{}\u{1e}"));

    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.me(Some(&sam)).await.0 != 503 {
        assert!(Instant::now() < deadline, "tokens still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let echo = invocation("1", "Echo", serde_json::json!(["x"]));
    let refused = send(&b, Some(&id), &sam, &echo).await;
    assert_eq!(
        (refused.status, refused.json()["error"].clone()),
        (503, serde_json::json!("store_unavailable")),
        "{refused:?}"
    );
    let sent = admin
        .call("b", "BroadcastMessage", serde_json::json!(["hold on"]))
        .await;
    assert!(sent.get("error").is_none(), "{sent}");
    let message = events.next_data().await.expect("the broadcast");
    let message = &records(message.as_bytes())[0];
    assert_eq!(message["target"], "SystemMessage", "{message}");
    assert_eq!(message["arguments"][0], "hold on", "{message}");

    let _restored = Proxy::start(proxy.listen, cluster().port()).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let answer = send(&b, Some(&id), &sam, &echo).await;
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let echoed = events.next_data().await.expect("the completion");
    assert_eq!(records(echoed.as_bytes())[0]["result"], "x", "{echoed}");
}

/// A PostgreSQL store that a node already started on holds its own `admin`: `store copy
/// --force` from a SQLite store with another `admin` refuses before copying anything, naming
/// the user, and copies everything once that user is removed from the target.
#[actix_web::test]
async fn store_copy_refuses_a_target_with_its_own_admin_until_it_is_removed() {
    let old = spawn_app().await;
    let session = old.user_session("noor").await;
    let old_admin_password = old.admin_password();
    let dir = old.data_dir.path();
    let from = format!(
        "sqlite://{}",
        dir.join(signet::store::DATABASE_FILE).display()
    );
    let url = fresh_database().await;
    // A first start on the target creates its own `admin`.
    let target_node = node(&url, &[]).await;
    assert_eq!(target_node.store.count_users().await.unwrap(), 1);
    let copy = || {
        crate::cli::signet(
            dir,
            None,
            &["store", "copy", "--from", &from, "--to", &url, "--force"],
            None,
        )
    };

    let refused = copy();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("user `admin`"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&refused.stdout).is_empty(),
        "no table was copied"
    );
    assert_eq!(target_node.store.count_users().await.unwrap(), 1);

    let other = tempfile::tempdir().unwrap();
    crate::cli::ok(&crate::cli::signet(
        other.path(),
        Some(&url),
        &["user", "remove", "admin"],
        None,
    ));
    let copied = crate::cli::ok(&copy());
    assert!(
        copied.contains("users             2 rows read, 2 new"),
        "{copied}"
    );
    // The source's admin and users, with their sessions, on the target.
    assert_eq!(
        target_node.login("admin", &old_admin_password).await.status,
        200
    );
    let refreshed = target_node
        .refresh(session["refreshToken"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
}
