//! The metrics move when the things they count happen: connections, traffic, invocations by
//! outcome, envelope rejections, authentication failures by reason, logins, rate limits,
//! refreshes, revocations. Read through `/metrics` as Prometheus would.

use crate::helpers::{claims, kid_of, now, sign_hs, spawn_app_with, user_token, TEST_SECRET};
use crate::ws_client::{admin_token, spawn_hub, HubServer};
use jsonwebtoken::Algorithm;
use serde_json::json;
use signet_protocol::envelope::{derive_message_key, EnvelopeBuilder};
use std::collections::HashMap;
use std::time::Duration;

/// Every series of an exposition: `name{labels}` -> value.
pub fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `/metrics` on the main listener, as an admin.
pub async fn scrape(server: &HubServer) -> HashMap<String, f64> {
    let mut response = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(admin_token("metrics-reader"))
        .send()
        .await
        .expect("metrics answered");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    let body = response.body().await.expect("body");
    parse(std::str::from_utf8(&body).expect("text"))
}

fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

/// Waits until `series` reaches at least `at_least` (counters recorded as a task ends).
async fn wait_for(server: &HubServer, series: &str, at_least: f64) -> HashMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = scrape(server).await;
        if value(&metrics, series) >= at_least {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed below {at_least}: {metrics:?}"
        );
        // Paces a poll of the (async) scrape, not a fixed wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WS_JSON: &str = r#"signet_connections{hub="home",transport="WebSockets",protocol="json"}"#;

fn invocations(method: &str, outcome: &str) -> String {
    format!(r#"signet_invocations_total{{hub="home",method="{method}",outcome="{outcome}"}}"#)
}

#[actix_web::test]
async fn connections_traffic_and_invocations_are_counted_by_outcome() {
    let server = spawn_hub(&[]).await;
    let before = scrape(&server).await;
    assert_eq!(value(&before, WS_JSON), 0.0);

    let mut client = server.open(&user_token("counted")).await;
    let after_open = scrape(&server).await;
    assert_eq!(value(&after_open, WS_JSON), 1.0, "{after_open:?}");
    assert_eq!(
        value(
            &after_open,
            r#"signet_connects_total{hub="home",transport="WebSockets",protocol="json"}"#
        ),
        1.0
    );

    client.assert_echo("one").await;
    let refused = client
        .call_error("2", "BroadcastMessage", json!(["hi"]))
        .await;
    assert!(refused.contains("unauthorized"), "{refused}");
    let unknown = client.call_error("3", "NoSuchMethod", json!([])).await;
    assert!(unknown.contains("does not exist"), "{unknown}");
    client
        .invoke_stream("4", "Counter", json!([1_000_000_000u64, 0]))
        .await;
    let failed = client.completion("4").await;
    assert!(failed["error"].is_string(), "{failed}");
    let wrong_key = derive_message_key(b"not-the-envelope-secret-0123456789abcdef", "jti");
    let forged = EnvelopeBuilder::new(&wrong_key, "/hubs/home", "EchoSigned").build("\"x\"");
    let rejected = client.call_error("5", "EchoSigned", json!([forged])).await;
    assert!(rejected.contains("bad_signature"), "{rejected}");

    let m = scrape(&server).await;
    assert_eq!(value(&m, &invocations("Echo", "ok")), 1.0, "{m:?}");
    assert_eq!(value(&m, &invocations("BroadcastMessage", "refused")), 1.0);
    assert_eq!(value(&m, &invocations("other", "invalid")), 1.0);
    assert_eq!(value(&m, &invocations("Counter", "error")), 1.0);
    assert_eq!(
        value(&m, &invocations("EchoSigned", "envelope_rejected")),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"signet_envelope_rejections_total{code="bad_signature"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"signet_invocation_duration_seconds_count{hub="home",method="Echo"}"#
        ),
        1.0
    );
    let received = r#"signet_messages_received_total{hub="home",protocol="json"}"#;
    assert_eq!(value(&m, received), 5.0, "five invocations: {m:?}");
    assert!(
        value(
            &m,
            r#"signet_received_bytes_total{hub="home",protocol="json"}"#
        ) > 100.0
    );
    // The handshake answer and five completions, at least.
    assert!(
        value(
            &m,
            r#"signet_messages_sent_total{hub="home",protocol="json"}"#
        ) >= 6.0
    );
    assert!(value(&m, r#"signet_sent_bytes_total{hub="home",protocol="json"}"#) > 100.0);

    let closes = |m: &HashMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("signet_connections_closed_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(closes(&m), 0.0);
    client.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&server).await;
        if closes(&m) == 1.0 {
            assert_eq!(value(&m, WS_JSON), 0.0, "the gauge follows the registry");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the close was not counted"
        );
        // Paces a poll of the (async) scrape, not a fixed wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn authentication_failures_are_counted_by_reason() {
    let server = spawn_hub(&[]).await;
    let kid = kid_of(TEST_SECRET);
    let mut expired = claims("late");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    let mut foreign = claims("elsewhere");
    foreign["aud"] = json!("another-service");
    let cases = [
        (None, "missing"),
        (
            Some(sign_hs(TEST_SECRET, Some(&kid), Algorithm::HS256, &expired)),
            "expired",
        ),
        (
            Some(sign_hs(
                "a-different-secret-0123456789-abcdefghijklmn",
                Some(&kid),
                Algorithm::HS256,
                &claims("forger"),
            )),
            "signature",
        ),
        (
            Some(sign_hs(TEST_SECRET, Some(&kid), Algorithm::HS256, &foreign)),
            "audience",
        ),
    ];
    for (token, reason) in cases {
        let series = format!(r#"signet_auth_failures_total{{reason="{reason}"}}"#);
        let before = value(&scrape(&server).await, &series);
        let answer = server.negotiate("", token.as_deref(), None).await;
        assert_eq!(answer.status, 401, "{reason}");
        assert_eq!(
            value(&scrape(&server).await, &series),
            before + 1.0,
            "{reason}"
        );
    }

    // A revoked token: revocation closes its live connection, and is counted as applied.
    let mut revoked = claims("revoked-user");
    revoked["iat"] = json!(now() - 10);
    let token = sign_hs(TEST_SECRET, Some(&kid), Algorithm::HS256, &revoked);
    let mut client = server.open(&token).await;
    server
        .state
        .auth
        .revocations()
        .revoke_user_before(
            "revoked-user",
            now(),
            signet::auth::RevocationCause::AdminRevoked,
        )
        .await
        .expect("revoked");
    client.expect_close(Duration::from_secs(5)).await;
    let m = wait_for(
        &server,
        r#"signet_connections_closed_total{reason="revoked"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        value(&m, r#"signet_revocations_applied_total{kind="user"}"#),
        1.0
    );
    assert_eq!(value(&m, "signet_revocation_closed_connections_total"), 1.0);
    let answer = server.negotiate("", Some(&token), None).await;
    assert_eq!(answer.status, 401);
    let m = scrape(&server).await;
    assert_eq!(
        value(&m, r#"signet_auth_failures_total{reason="revoked"}"#),
        1.0
    );
}

#[actix_web::test]
async fn logins_refreshes_and_rate_limits_are_counted() {
    let app = spawn_app_with(&[("SIGNET__IDENTITY__LOGIN_MAX_FAILURES", "2")]).await;
    let admin = app.admin_token().await;
    app.create_user("metered", &["user"], crate::helpers::TEST_PASSWORD)
        .await;
    let read = || async {
        let mut response = app
            .client
            .get(app.url("/metrics"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("metrics answered");
        let body = response.body().await.expect("body");
        parse(std::str::from_utf8(&body).expect("text"))
    };
    let before = read().await;
    let login = |outcome: &str| format!(r#"signet_logins_total{{outcome="{outcome}"}}"#);

    assert_eq!(app.login("metered", "wrong password").await.status, 401);
    let session = app.login("metered", crate::helpers::TEST_PASSWORD).await;
    assert_eq!(session.status, 200);
    assert_eq!(app.refresh(&session.str("refreshToken")).await.status, 200);
    assert_eq!(app.refresh("not-a-refresh-token").await.status, 401);
    for _ in 0..3 {
        app.login("metered", "wrong again").await;
    }

    let after = read().await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(delta(&login("success")), 1.0, "{after:?}");
    assert!(delta(&login("failure")) >= 2.0);
    assert!(delta(&login("rate_limited")) >= 1.0);
    assert!(delta(r#"signet_rate_limited_total{limit="login"}"#) >= 1.0);
    assert_eq!(
        delta(r#"signet_token_refreshes_total{kind="session",outcome="success"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"signet_token_refreshes_total{kind="session",outcome="invalid"}"#),
        1.0
    );
    // The store is metered: logins read users and write sessions.
    assert!(delta(r#"signet_store_query_duration_seconds_count{operation="user_by_name"}"#) >= 5.0);
    assert!(
        delta(r#"signet_store_query_duration_seconds_count{operation="create_session"}"#) >= 1.0
    );
    assert_eq!(
        delta(r#"signet_store_errors_total{operation="user_by_name"}"#),
        0.0
    );
    // Process metrics are there (Linux).
    if cfg!(target_os = "linux") {
        assert!(value(&after, "process_resident_memory_bytes") > 0.0);
        assert!(value(&after, "process_open_fds") > 0.0);
        assert!(after.contains_key("process_cpu_seconds_total"));
    }
}
