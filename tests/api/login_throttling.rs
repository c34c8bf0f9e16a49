//! Login throttling against the real server: strict per (username, address), higher per
//! address, a backoff per username, client addresses from trusted proxies only, IPv6 by /64,
//! and password hashing bounded by a semaphore. Distinct client addresses come from a trusted
//! proxy's forwarding header: the test is the proxy.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

/// Logs in as if through a proxy that names `client` in `header`.
async fn login_via(app: &TestApp, header: &str, client: &str, user: &str, pw: &str) -> Answer {
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .insert_header((header, client))
        .send_json(&json!({"username": user, "password": pw}))
        .await
        .expect("request sent");
    answer(res).await
}

async fn login_from(app: &TestApp, client: &str, user: &str, pw: &str) -> Answer {
    login_via(app, "X-Forwarded-For", client, user, pw).await
}

fn retry_after(answer: &Answer) -> u64 {
    answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {answer:?}"))
}

const BEHIND_LOCAL_PROXY: (&str, &str) = ("SIGNET__SERVER__TRUSTED_PROXIES", "127.0.0.1");

async fn one_users_failures_leave_other_users_at_the_same_address_alone(store: Backend) {
    let app = spawn_app_on(store, &[BEHIND_LOCAL_PROXY]).await;
    app.create_user("alice", &["user"], TEST_PASSWORD).await;
    app.create_user("bob", &["user"], TEST_PASSWORD).await;
    for _ in 0..5 {
        let failed = login_from(&app, "10.0.0.1", "bob", "wrong-password").await;
        assert_eq!(failed.status, 401, "{failed:?}");
    }
    let limited = login_from(&app, "10.0.0.1", "bob", TEST_PASSWORD).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.error(), "rate_limited");
    assert!((1..=60).contains(&retry_after(&limited)));
    // Everyone else behind that address logs in, and so does bob from elsewhere.
    assert_eq!(
        login_from(&app, "10.0.0.1", "alice", TEST_PASSWORD)
            .await
            .status,
        200
    );
    assert_eq!(
        login_from(&app, "10.0.0.2", "bob", TEST_PASSWORD)
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn an_address_is_refused_after_its_own_higher_limit_across_names() {
    let app = spawn_app_with(&[
        BEHIND_LOCAL_PROXY,
        ("SIGNET__IDENTITY__LOGIN_MAX_FAILURES_PER_ADDRESS", "12"),
    ])
    .await;
    app.create_user("carol", &["user"], TEST_PASSWORD).await;
    for i in 0..12 {
        let failed = login_from(&app, "10.0.0.9", &format!("guess{i}"), "pw-guess").await;
        assert_eq!(failed.status, 401, "{failed:?}");
    }
    // Now the address is spent, for every name: a guesser there gets nothing more.
    let limited = login_from(&app, "10.0.0.9", "carol", TEST_PASSWORD).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(
        login_from(&app, "10.0.0.10", "carol", TEST_PASSWORD)
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn a_username_guessed_from_many_addresses_backs_off_instead_of_locking_out() {
    let app = spawn_app_with(&[
        BEHIND_LOCAL_PROXY,
        ("SIGNET__IDENTITY__LOGIN_BACKOFF_AFTER_FAILURES", "3"),
        ("SIGNET__IDENTITY__LOGIN_MAX_BACKOFF_SECS", "2"),
    ])
    .await;
    app.create_user("dora", &["user"], TEST_PASSWORD).await;
    app.create_user("ed", &["user"], TEST_PASSWORD).await;
    // Three free failures, then a fourth that is checked but starts a 1 s delay.
    for i in 1..=4 {
        let failed = login_from(&app, &format!("10.1.0.{i}"), "dora", "guess").await;
        assert_eq!(failed.status, 401, "attempt {i}: {failed:?}");
    }
    // During the delay every attempt on the name waits, from any address, even the right one.
    let waiting = login_from(&app, "10.1.0.5", "dora", TEST_PASSWORD).await;
    assert_eq!(waiting.status, 429, "{waiting:?}");
    assert_eq!(retry_after(&waiting), 1);
    assert_eq!(
        login_from(&app, "10.1.0.5", "ed", TEST_PASSWORD)
            .await
            .status,
        200
    );
    // Not a lockout: once the delay is over the owner gets in, which resets the name. A real
    // wait: the delay runs on the server's clock, and retrying to see when it ends would be
    // attempts during the delay (the limiter's unit tests step its clock instead).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        login_from(&app, "10.1.0.6", "dora", TEST_PASSWORD)
            .await
            .status,
        200
    );
    for i in 1..=3 {
        let failed = login_from(&app, &format!("10.1.1.{i}"), "dora", "guess").await;
        assert_eq!(
            failed.status, 401,
            "after the reset, attempt {i}: {failed:?}"
        );
    }
}

#[actix_web::test]
async fn forwarding_headers_are_ignored_unless_the_peer_is_a_trusted_proxy() {
    for env in [
        vec![],
        vec![(
            "SIGNET__SERVER__TRUSTED_PROXIES",
            "10.9.9.9, 192.168.0.0/16",
        )],
    ] {
        let app = spawn_app_with(&env).await;
        app.create_user("fay", &["user"], TEST_PASSWORD).await;
        for i in 0..5 {
            let client = format!("10.2.0.{i}");
            assert_eq!(login_from(&app, &client, "fay", "guess").await.status, 401);
        }
        // Every attempt came from 127.0.0.1 whatever the header said.
        let limited = login_from(&app, "10.2.0.99", "fay", TEST_PASSWORD).await;
        assert_eq!(limited.status, 429, "{env:?}: {limited:?}");
    }
}

#[actix_web::test]
async fn only_the_configured_forwarding_header_is_read() {
    let app = spawn_app_with(&[
        BEHIND_LOCAL_PROXY,
        ("SIGNET__SERVER__FORWARDED_HEADER", "forwarded"),
    ])
    .await;
    app.create_user("gil", &["user"], TEST_PASSWORD).await;
    for i in 0..5 {
        // A client-supplied X-Forwarded-For changes nothing: the proxy writes `Forwarded`.
        let answer = login_from(&app, &format!("10.3.0.{i}"), "gil", "guess").await;
        assert_eq!(answer.status, 401);
    }
    let limited = login_from(&app, "10.3.0.99", "gil", TEST_PASSWORD).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    // Through `Forwarded`, the rightmost untrusted hop is the client: a new address.
    let hops = "for=10.3.1.1, for=\"10.3.1.2:5000\";proto=https";
    let answer = login_via(&app, "Forwarded", hops, "gil", TEST_PASSWORD).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[actix_web::test]
async fn ipv6_clients_are_counted_by_their_64() {
    let app = spawn_app_with(&[BEHIND_LOCAL_PROXY]).await;
    app.create_user("hal", &["user"], TEST_PASSWORD).await;
    for i in 1..=5 {
        // Each attempt from a new address of the same /64.
        let client = format!("2001:db8:1:2::{i:x}");
        assert_eq!(login_from(&app, &client, "hal", "guess").await.status, 401);
    }
    let limited = login_from(
        &app,
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "hal",
        TEST_PASSWORD,
    )
    .await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let next_64 = login_from(&app, "2001:db8:1:3::1", "hal", TEST_PASSWORD).await;
    assert_eq!(next_64.status, 200, "{next_64:?}");
}

#[actix_web::test]
async fn password_hashing_beyond_its_slots_answers_503_with_retry_after() {
    let app = spawn_app_with(&[
        BEHIND_LOCAL_PROXY,
        ("SIGNET__IDENTITY__MAX_CONCURRENT_PASSWORD_HASHES", "1"),
        ("SIGNET__IDENTITY__PASSWORD_HASH_WAIT_MS", "0"),
        // Costly enough that one check is still running when the others arrive.
        ("SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB", "32768"),
        ("SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS", "4"),
    ])
    .await;
    app.create_user("ivy", &["user"], TEST_PASSWORD).await;
    let attempts = (0..8).map(|i| {
        let client = format!("10.4.0.{i}");
        let app = &app;
        async move { login_from(app, &client, "ivy", "guess").await }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let busy: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(!busy.is_empty(), "no attempt was turned away: {answers:?}");
    assert!(answers.iter().any(|a| a.status == 401), "{answers:?}");
    assert!(
        answers.iter().all(|a| [401, 503].contains(&a.status)),
        "{answers:?}"
    );
    for answer in &busy {
        assert_eq!(answer.error(), "busy");
        assert_eq!(retry_after(answer), 1);
    }
    // Once the checks are done the slot is free again.
    let answer = login_from(&app, "10.4.1.1", "ivy", TEST_PASSWORD).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

each_store!(one_users_failures_leave_other_users_at_the_same_address_alone);
