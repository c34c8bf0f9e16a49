//! Where the metrics are served and what they may contain: `[metrics] listen` serves only
//! `/metrics`, to anyone; labels never carry a user id, connection id or token. `/readyz`
//! follows the store.

use crate::helpers::{spawn_app, spawn_app_with, user_token};
use crate::ws_client::{admin_token, spawn_hub};
use serde_json::json;

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
