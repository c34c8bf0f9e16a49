//! Where the metrics are served and what they may contain: `[metrics] listen` serves only
//! `/metrics`, to anyone; labels never carry a user id, connection id or token. `/readyz`
//! follows the store.

use crate::helpers::{spawn_app, spawn_app_with, user_token};
use crate::ws_client::{admin_token, spawn_hub};
use serde_json::json;
use signet_protocol::envelope::{derive_message_key, EnvelopeBuilder};
use std::time::Duration;

async fn get(client: &awc::Client, url: String) -> (u16, String) {
    let mut response = client.get(url).send().await.expect("answered");
    let body = response.body().await.expect("body");
    (
        response.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_web::test]
async fn the_metrics_listener_serves_only_metrics_without_authentication() {
    let app = spawn_app_with(&[("SIGNET__METRICS__LISTEN", "127.0.0.1:0")]).await;
    let metrics = app.metrics_address.expect("a metrics listener");
    assert_ne!(metrics, app.address);
    let (status, body) = get(&app.client, format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE signet_connections_closed_total counter"),
        "{body}"
    );
    assert!(body.contains("signet_rate_limited_total{limit=\"login\"} 0"));
    for path in [
        "/healthz",
        "/readyz",
        "/api/auth/me",
        "/",
        "/hubs/home/negotiate",
    ] {
        let (status, _) = get(&app.client, format!("http://{metrics}{path}")).await;
        assert_eq!(status, 404, "{path} on the metrics listener");
    }
    // The main listener's /metrics still wants an admin.
    let (status, _) = get(&app.client, app.url("/metrics")).await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn without_a_metrics_listener_there_is_none() {
    let app = spawn_app().await;
    assert_eq!(app.metrics_address, None);
}

#[actix_web::test]
async fn labels_never_name_a_user_a_connection_or_a_token() {
    let server = spawn_hub(&[]).await;
    let sub = "label-bound-user-7d1f";
    let token = user_token(sub);
    let mut client = server.open(&token).await;
    client.assert_echo("bounded").await;
    let unknown = client
        .call_error("9", "MethodNamedByTheClient7d1f", json!([]))
        .await;
    assert!(unknown.contains("does not exist"));
    let ids: Vec<String> = server
        .state
        .connections
        .all()
        .iter()
        .flat_map(|c| [c.id.clone(), c.token.clone()])
        .collect();
    assert!(!ids.is_empty());

    let mut response = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(admin_token("auditor"))
        .send()
        .await
        .expect("answered");
    let body = String::from_utf8(response.body().await.expect("body").to_vec()).expect("text");
    assert!(body.contains("method=\"other\""), "{body}");
    for secret in ids
        .iter()
        .map(String::as_str)
        .chain([sub, token.as_str(), "7d1f"])
    {
        assert!(!body.contains(secret), "{secret} reached the metrics");
    }
}

#[actix_web::test]
async fn readiness_follows_the_store_and_liveness_does_not() {
    let app = spawn_app().await;
    let (status, body) = get(&app.client, app.url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body, json!({"status": "ready", "checks": {"store": "ok"}}));

    let db = app.data_dir.path().join(signet::store::DATABASE_FILE);
    let moved = app.data_dir.path().join("signet.db.moved");
    std::fs::rename(&db, &moved).expect("moved away");
    let (status, body) = get(&app.client, app.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["failing"], json!(["store"]));
    assert_eq!(body["checks"]["store"], "error");
    assert!(
        !body
            .to_string()
            .contains(&app.data_dir.path().display().to_string()),
        "no path in a public answer"
    );
    let (status, _) = get(&app.client, app.url("/healthz")).await;
    assert_eq!(status, 200, "liveness stays up");

    std::fs::rename(&moved, &db).expect("moved back");
    let (status, _) = get(&app.client, app.url("/readyz")).await;
    assert_eq!(status, 200, "ready again");
}

/// Every metric `docs/grafana-dashboard.json` queries is one the server exposes. A labelled
/// family shows once it has a series, so the server first does one of everything.
#[actix_web::test]
async fn the_grafana_dashboard_queries_only_exposed_metrics() {
    let server = spawn_hub(&[]).await;
    let mut client = server.open(&user_token("dashboard-user")).await;
    client.assert_echo("dashboard").await;
    let wrong_key = derive_message_key(b"not-the-envelope-secret-0123456789abcdef", "jti");
    let forged = EnvelopeBuilder::new(&wrong_key, "/hubs/home", "EchoSigned").build("1");
    client.call_error("2", "EchoSigned", json!([forged])).await;
    let refreshed = client
        .call("3", "RefreshToken", json!([user_token("dashboard-user")]))
        .await;
    assert!(refreshed["result"].is_object(), "{refreshed}");
    assert_eq!(server.negotiate("", None, None).await.status, 401);
    let mut bad = server
        .connect("", Some(&user_token("bad-handshake")), None)
        .await
        .expect("upgraded");
    bad.send_text("{\"protocol\":\"carrier-pigeon\",\"version\":1}\u{1e}")
        .await;
    let _ = bad.next_event(Duration::from_secs(5)).await;
    server
        .state
        .auth
        .revocations()
        .revoke_user_before(
            "nobody-connected",
            crate::helpers::now(),
            signet::auth::RevocationCause::AdminRevoked,
        )
        .await
        .expect("revoked");
    let mut login = server
        .http
        .post(server.url("/api/auth/login"))
        .send_json(&json!({"username": "nobody", "password": "nothing"}))
        .await
        .expect("answered");
    assert_eq!(login.status().as_u16(), 401);
    let _ = login.body().await;
    // The revocation event is applied by a task: wait until it has been.
    server.wait_until_a_revocation_is_applied().await;
    let mut response = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(admin_token("dashboard"))
        .send()
        .await
        .expect("answered");
    let body = String::from_utf8(response.body().await.expect("body").to_vec()).expect("text");
    let mut exposed = std::collections::HashSet::new();
    for line in body.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            exposed.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_count", "_sum"] {
                    exposed.insert(format!("{name}{suffix}"));
                }
            }
        }
    }

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 15, "the dashboard has its queries");
    let mut used = 0;
    for expr in &exprs {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("signet_") || w.starts_with("process_"));
        for name in names {
            used += 1;
            assert!(
                exposed.contains(name),
                "{name} (in `{expr}`) is not exposed"
            );
        }
    }
    assert!(used >= exprs.len());
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
