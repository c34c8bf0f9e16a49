//! Token lifetime on live connections, seen with a raw client: an admin's kick closes exactly the
//! user's connections and says how many; every close is counted by reason in `/metrics`; a
//! device's status comes from presence.

use crate::helpers::{claims, kid_of, sign_hs, user_token, TEST_PASSWORD, TEST_SECRET};
use crate::metrics::scrape;
use crate::ws_client::{admin_token, spawn_hub, HubServer};
use jsonwebtoken::Algorithm;
use serde_json::json;
use signet::identity::{Passwords, UserAdmin};
use std::time::Duration;

/// The value of `signet_connections_closed_total{reason="<reason>"}` in `/metrics`.
async fn closed_total(server: &HubServer, reason: &str) -> u64 {
    let series = format!("signet_connections_closed_total{{reason=\"{reason}\"}}");
    let metrics = scrape(server).await;
    let value = metrics
        .get(&series)
        .unwrap_or_else(|| panic!("no counter for {reason} in {metrics:?}"));
    *value as u64
}

#[actix_web::test]
async fn disconnect_user_closes_only_that_users_connections_and_counts_them() {
    let server = spawn_hub(&[]).await;
    let mut first = server.open(&user_token("kicked-user")).await;
    let mut second = server.open(&user_token("kicked-user")).await;
    let mut bystander = server.open(&user_token("bystander")).await;
    let mut admin = server.open(&admin_token("the-admin")).await;
    let before = closed_total(&server, "kicked").await;

    let closed = admin
        .call("1", "DisconnectUser", json!(["kicked-user"]))
        .await;
    assert_eq!(closed["result"], json!(2), "{closed}");
    for client in [&mut first, &mut second] {
        let ending = client.expect_close(Duration::from_secs(1)).await;
        let message = ending.close_message.expect("a Close message");
        assert_eq!(message["error"], "Disconnected by an administrator");
        assert!(message.get("allowReconnect").is_none(), "{message}");
    }
    bystander.assert_echo("still connected").await;
    server.wait_for_connections(2).await;
    assert_eq!(closed_total(&server, "kicked").await, before + 2);

    // A user may not kick anyone.
    let error = bystander
        .call_error("2", "DisconnectUser", json!(["the-admin"]))
        .await;
    assert_eq!(
        error,
        "Failed to invoke 'DisconnectUser' because user is unauthorized"
    );
}

#[actix_web::test]
async fn an_expired_connection_is_counted_as_expired() {
    let server = spawn_hub(&[]).await;
    let mut c = claims("short-lived");
    c["exp"] = json!(crate::helpers::now() + 1);
    let token = sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &c,
    );
    let before = closed_total(&server, "expired").await;
    let mut client = server.open(&token).await;
    let ending = client.expect_close(Duration::from_secs(3)).await;
    let message = ending.close_message.expect("a Close message");
    assert_eq!(message["error"], "Authentication expired");
    assert_eq!(message["allowReconnect"], true);
    server.wait_for_connections(0).await;
    assert_eq!(closed_total(&server, "expired").await, before + 1);
}

#[actix_web::test]
async fn metrics_are_for_admins_only() {
    let server = spawn_hub(&[]).await;
    let response = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(user_token("curious"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 403);
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 401);
}

/// `POST` a JSON body with a bearer token (or none); the status and the JSON answer.
async fn post_json(
    server: &HubServer,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = server.http.post(server.url(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let mut res = request.send_json(body).await.expect("request sent");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[actix_web::test]
async fn list_devices_shows_each_devices_presence() {
    let server = spawn_hub(&[]).await;
    let passwords = Passwords::new(&server.state.settings.identity)
        .await
        .unwrap();
    let owner = UserAdmin::new(server.state.store.clone(), passwords)
        .add("device-owner", &["user".to_string()], TEST_PASSWORD)
        .await
        .unwrap();
    let owner_token = user_token(&owner.id);
    let mut devices = Vec::new();
    for name in ["kitchen", "garage", "porch"] {
        let (status, device) = post_json(
            &server,
            "/api/devices",
            Some(&owner_token),
            &json!({ "name": name }),
        )
        .await;
        assert_eq!(status, 201, "{device}");
        devices.push(device);
    }
    let exchange = |device: &serde_json::Value| {
        let body = json!({ "deviceId": device["deviceId"], "deviceKey": device["deviceKey"] });
        let server = &server;
        async move {
            let (status, tokens) = post_json(server, "/api/auth/device-token", None, &body).await;
            assert_eq!(status, 200, "{tokens}");
            tokens["accessToken"].as_str().unwrap().to_string()
        }
    };
    // The first and the last device connect; the one between stays away.
    let kitchen = server.open(&exchange(&devices[0]).await).await;
    let _porch = server.open(&exchange(&devices[2]).await).await;
    let mut user = server.open(&owner_token).await;

    let presence = |listed: &serde_json::Value| -> Vec<(String, bool)> {
        let mut found: Vec<(String, bool)> = listed["result"]
            .as_array()
            .unwrap_or_else(|| panic!("no list in {listed}"))
            .iter()
            .map(|d| {
                let name = d["name"].as_str().unwrap_or_default().to_string();
                (name, d["online"].as_bool().unwrap())
            })
            .collect();
        found.sort();
        found
    };
    let listed = user.call("1", "ListDevices", json!([])).await;
    assert_eq!(
        presence(&listed),
        vec![
            ("garage".to_string(), false),
            ("kitchen".to_string(), true),
            ("porch".to_string(), true),
        ]
    );

    kitchen.close().await;
    server.wait_for_connections(2).await;
    let listed = user.call("2", "ListDevices", json!([])).await;
    assert_eq!(
        presence(&listed),
        vec![
            ("garage".to_string(), false),
            ("kitchen".to_string(), false),
            ("porch".to_string(), true),
        ]
    );
}

/// `POST /hubs/home/refresh?id=` with `token`: the status and the JSON body.
async fn refresh_over_http(server: &HubServer, id: &str, token: &str) -> (u16, serde_json::Value) {
    let mut response = server
        .http
        .post(server.url(&format!("/hubs/home/refresh?id={id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("refresh answered");
    let body = response.json().await.expect("a JSON body");
    (response.status().as_u16(), body)
}

/// Both ways into an in-band refresh refuse the same tokens with the same words: the
/// `RefreshToken` hub method's error is the HTTP answer's `error: message`, and neither changes
/// the connection.
#[actix_web::test]
async fn both_ways_to_refresh_refuse_a_bad_token_with_the_same_text() {
    let server = spawn_hub(&[]).await;
    let owner = user_token("refresh-owner");
    let negotiated = server
        .negotiate("?negotiateVersion=1", Some(&owner), None)
        .await;
    let id = negotiated.body["connectionToken"]
        .as_str()
        .expect("a connection token")
        .to_string();
    let mut client = server
        .connect(&format!("?id={id}"), Some(&owner), None)
        .await
        .expect("upgraded");
    client.handshake().await;
    let who = client.call("who", "Whoami", json!([])).await["result"].clone();
    let invalid_refreshes = |m: std::collections::HashMap<String, f64>| {
        m.get(r#"signet_token_refreshes_total{kind="connection",outcome="invalid"}"#)
            .copied()
            .unwrap_or(0.0)
    };
    let invalid_before = invalid_refreshes(scrape(&server).await);

    let mut expired = claims("refresh-owner");
    expired["exp"] = json!(crate::helpers::now() - 3600);
    let expired = sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &expired,
    );
    let refusals = [
        (
            "not-a-token".to_string(),
            401,
            "invalid_token",
            "the new token is not valid",
        ),
        (expired, 401, "invalid_token", "the new token is not valid"),
        (
            user_token("someone-else"),
            403,
            "user_mismatch",
            "the new token belongs to another user than the connection",
        ),
    ];
    for (n, (token, status, code, message)) in refusals.iter().enumerate() {
        let (answered, body) = refresh_over_http(&server, &id, token).await;
        assert_eq!(
            (answered, &body["error"], &body["message"]),
            (*status, &json!(code), &json!(message)),
            "{body}"
        );
        let error = client
            .call_error(&n.to_string(), "RefreshToken", json!([token]))
            .await;
        assert_eq!(
            error,
            format!(
                "An unexpected error occurred invoking 'RefreshToken' on the server. \
                 HubException: {code}: {message}"
            )
        );
    }
    assert_eq!(
        client.call("who", "Whoami", json!([])).await["result"],
        who,
        "no refusal changed the connection"
    );
    // The invalid tokens are counted whichever way they came.
    let invalid_after = invalid_refreshes(scrape(&server).await);
    assert_eq!(invalid_after - invalid_before, 4.0);
    // A request naming no connection is told so once its token is judged valid.
    let (answered, body) = refresh_over_http(&server, "no-such-connection", &owner).await;
    assert_eq!(
        (answered, &body["error"], &body["message"]),
        (
            404,
            &json!("unknown_connection"),
            &json!("no connection with this id")
        )
    );
}
