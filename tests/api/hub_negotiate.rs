//! Negotiate and the WebSocket upgrade: the response shapes of both negotiate versions, who
//! may connect to which connection, the negotiate timeout, and browser origins.

use crate::helpers::{claims, kid_of, now, sign_hs, user_token, wait_until_expired, TEST_SECRET};
use crate::ws_client::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use signet::auth::RevocationCause;
use std::time::Duration;

const APP_ORIGIN: &str = "https://app.example.com";

fn is_base64url_id(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == 22
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A token `/hubs` must refuse: expired, or with a broken signature.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 60);
    let expired = sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &expired,
    );
    // One character of the signature changed (not the last, whose low bits are padding).
    let mut tampered = user_token("alice").into_bytes();
    let sig = tampered.iter().rposition(|&b| b == b'.').expect("a JWT") + 1;
    tampered[sig] = if tampered[sig] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    vec![
        ("garbage", "not-a-jwt".to_string()),
        ("expired", expired),
        ("tampered", tampered),
    ]
}

/// Negotiates as `sub` and returns the connection token.
async fn negotiated(server: &HubServer, sub: &str) -> String {
    negotiated_with(server, &user_token(sub)).await
}

#[actix_web::test]
async fn negotiate_v1_returns_a_secret_token_beside_the_public_id() {
    let server = spawn_hub(&[]).await;
    let token = user_token("alice");
    let answer = server
        .negotiate("?negotiateVersion=1", Some(&token), None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let body = &answer.body;
    assert_eq!(body["negotiateVersion"], 1);
    assert!(is_base64url_id(&body["connectionId"]), "{body}");
    assert!(is_base64url_id(&body["connectionToken"]), "{body}");
    assert_ne!(body["connectionId"], body["connectionToken"]);
    assert_eq!(
        body["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );
    let again = server
        .negotiate("?negotiateVersion=1", Some(&token), None)
        .await;
    assert_ne!(again.body["connectionId"], body["connectionId"]);
    assert_ne!(again.body["connectionToken"], body["connectionToken"]);
    assert_eq!(server.connection_count(), 2);

    // The transport names the connection by its secret token, never by the public id.
    let id = body["connectionId"].as_str().unwrap();
    assert_eq!(
        server
            .connect(&format!("?id={id}"), Some(&token), None)
            .await
            .err(),
        Some(404)
    );
    let secret = body["connectionToken"].as_str().unwrap();
    let mut client = server
        .connect(&format!("?id={secret}"), Some(&token), None)
        .await
        .expect("the token connects");
    client.handshake().await;
    client.assert_echo("negotiated v1").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn negotiate_v0_has_no_connection_token_and_its_id_connects() {
    let server = spawn_hub(&[]).await;
    let token = user_token("legacy");
    let answer = server.negotiate("", Some(&token), None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["negotiateVersion"], 0);
    assert!(is_base64url_id(&answer.body["connectionId"]));
    assert!(
        answer.body.get("connectionToken").is_none(),
        "{}",
        answer.body
    );
    let id = answer.body["connectionId"].as_str().unwrap();
    let mut client = server
        .connect(&format!("?id={id}"), Some(&token), None)
        .await
        .expect("the id connects");
    client.handshake().await;
    client.assert_echo("negotiated v0").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn without_a_valid_token_negotiate_and_the_upgrade_get_401_and_create_nothing() {
    let server = spawn_hub(&[]).await;
    let answer = server.negotiate("?negotiateVersion=1", None, None).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body["error"], "missing_token");
    assert!(answer.header("www-authenticate").is_some());
    assert_eq!(server.connect("", None, None).await.err(), Some(401));
    for (what, bad) in bad_tokens() {
        let answer = server
            .negotiate("?negotiateVersion=1", Some(&bad), None)
            .await;
        assert_eq!(answer.status, 401, "{what}");
        assert_eq!(
            server.connect("", Some(&bad), None).await.err(),
            Some(401),
            "{what}"
        );
        let query = format!("?access_token={bad}");
        assert_eq!(
            server.connect(&query, None, None).await.err(),
            Some(401),
            "{what}"
        );
    }
    assert_eq!(server.connection_count(), 0);

    // A connection token is no credential: the upgrade still needs the user's token.
    let secret = negotiated(&server, "alice").await;
    let query = format!("?id={secret}");
    assert_eq!(server.connect(&query, None, None).await.err(), Some(401));
    let (_, bad) = &bad_tokens()[1];
    assert_eq!(
        server.connect(&query, Some(bad), None).await.err(),
        Some(401)
    );
    assert_eq!(server.connection_count(), 1);
    server.assert_healthy().await;
}

/// Negotiates with `token` and returns the connection token.
async fn negotiated_with(server: &HubServer, token: &str) -> String {
    let answer = server
        .negotiate("?negotiateVersion=1", Some(token), None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["connectionToken"]
        .as_str()
        .expect("a connection token")
        .to_string()
}

/// The upgrade that carries the very token negotiate verified is not verified again, but what
/// can change after negotiate is checked: that token expiring or being revoked in between is
/// refused, and an altered token is verified in full.
#[actix_web::test]
async fn the_upgrade_rechecks_negotiate_s_own_token_for_expiry_and_revocation() {
    let server = spawn_hub(&[("SIGNET__HUB__NEGOTIATE_TIMEOUT_SECS", "30")]).await;
    let sign = |claims: &serde_json::Value| {
        sign_hs(
            TEST_SECRET,
            Some(&kid_of(TEST_SECRET)),
            Algorithm::HS256,
            claims,
        )
    };

    let mut short = claims("alice");
    let exp = now() + 1;
    short["exp"] = json!(exp);
    let token = sign(&short);
    let secret = negotiated_with(&server, &token).await;
    wait_until_expired(exp).await;
    // Still negotiated, so the upgrade finds negotiate's token on it.
    assert!(server.state.connections.get(&secret).is_some());
    let query = format!("?id={secret}");
    assert_eq!(
        server.connect(&query, Some(&token), None).await.err(),
        Some(401),
        "expired since negotiate"
    );

    let mut revoked = claims("bob");
    revoked["jti"] = json!("jti-revoked-between");
    let token = sign(&revoked);
    let secret = negotiated_with(&server, &token).await;
    server
        .state
        .auth
        .revocations()
        .deny_token("jti-revoked-between", now() + 600, RevocationCause::Logout)
        .await
        .unwrap();
    assert_eq!(
        server
            .connect(&format!("?id={secret}"), Some(&token), None)
            .await
            .err(),
        Some(401),
        "revoked since negotiate"
    );

    let token = sign(&claims("carol"));
    let secret = negotiated_with(&server, &token).await;
    let query = format!("?id={secret}");
    // One character of the signature changed: not negotiate's token, so verified in full.
    let mut altered = token.clone().into_bytes();
    let sig = altered.iter().rposition(|&b| b == b'.').expect("a JWT") + 1;
    altered[sig] = if altered[sig] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ASCII");
    assert_eq!(
        server.connect(&query, Some(&altered), None).await.err(),
        Some(401)
    );
    // The token negotiate verified opens it.
    let mut client = server.connect(&query, Some(&token), None).await.unwrap();
    client.handshake().await;
    client.assert_echo("upgraded on negotiate's token").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn an_unknown_id_is_404() {
    let server = spawn_hub(&[]).await;
    let token = user_token("alice");
    for id in ["doesnotexist", "AAAAAAAAAAAAAAAAAAAAAA", "%20"] {
        assert_eq!(
            server
                .connect(&format!("?id={id}"), Some(&token), None)
                .await
                .err(),
            Some(404),
            "{id:?}"
        );
    }
    assert_eq!(server.connection_count(), 0);
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_second_transport_on_a_live_connection_is_409() {
    let server = spawn_hub(&[]).await;
    let token = user_token("alice");
    let secret = negotiated(&server, "alice").await;
    let query = format!("?id={secret}");
    let mut first = server.connect(&query, Some(&token), None).await.unwrap();
    first.handshake().await;
    assert_eq!(
        server.connect(&query, Some(&token), None).await.err(),
        Some(409)
    );
    first.assert_echo("still the only transport").await;
    assert_eq!(server.connection_count(), 1);
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_token_of_another_user_on_id_is_403_and_drops_the_connection() {
    let server = spawn_hub(&[]).await;
    // A negotiated connection whose token reached someone else is dropped.
    let secret = negotiated(&server, "alice").await;
    let query = format!("?id={secret}");
    let mallory = user_token("mallory");
    assert_eq!(
        server.connect(&query, Some(&mallory), None).await.err(),
        Some(403)
    );
    assert_eq!(server.connection_count(), 0);
    let alice = user_token("alice");
    assert_eq!(
        server.connect(&query, Some(&alice), None).await.err(),
        Some(404)
    );

    // So is a live one, which is told why.
    let secret = negotiated(&server, "alice").await;
    let query = format!("?id={secret}");
    let mut live = server.connect(&query, Some(&alice), None).await.unwrap();
    live.handshake().await;
    assert_eq!(
        server.connect(&query, Some(&mallory), None).await.err(),
        Some(403)
    );
    let ending = live.expect_close(PROMPT).await;
    assert_eq!(
        ending.close_message,
        Some(json!({
            "type": CLOSE,
            "error": "Authentication revoked: a token of another user was presented on this connection",
        }))
    );
    server.wait_for_connections(0).await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn skip_negotiation_connects_without_an_id() {
    let server = spawn_hub(&[]).await;
    let mut with_header = server.open(&user_token("header")).await;
    // Browsers cannot set headers on a WebSocket: the token comes in the query.
    let query = format!("?access_token={}", user_token("query"));
    let mut with_query = server.connect(&query, None, None).await.unwrap();
    with_query.handshake().await;
    with_header.assert_echo("header").await;
    with_query.assert_echo("query").await;
    let whoami = with_query.call("w", "Whoami", json!([])).await;
    assert_eq!(whoami["result"]["sub"], "query");
    assert_eq!(server.connection_count(), 2);
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_negotiated_connection_never_connected_is_dropped_after_the_negotiate_timeout() {
    let server = spawn_hub(&[("SIGNET__HUB__NEGOTIATE_TIMEOUT_SECS", "1")]).await;
    let token = user_token("alice");
    let negotiated_at = std::time::Instant::now();
    let abandoned = negotiated(&server, "alice").await;
    let used = negotiated(&server, "alice").await;
    let mut client = server
        .connect(&format!("?id={used}"), Some(&token), None)
        .await
        .unwrap();
    client.handshake().await;
    assert_eq!(server.connection_count(), 2);
    server.wait_for_connections(1).await;
    assert!(
        negotiated_at.elapsed() >= Duration::from_millis(900),
        "dropped long before the negotiate timeout: {:?}",
        negotiated_at.elapsed()
    );
    assert_eq!(
        server
            .connect(&format!("?id={abandoned}"), Some(&token), None)
            .await
            .err(),
        Some(404)
    );
    // The connected one is not subject to the negotiate timeout.
    client.assert_echo("after the negotiate timeout").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn an_allowed_origin_gets_credentialed_cors_and_connects() {
    let server = spawn_hub(&[("SIGNET__SERVER__ALLOWED_ORIGINS", APP_ORIGIN)]).await;
    let token = user_token("browser");
    let answer = server
        .negotiate("?negotiateVersion=1", Some(&token), Some(APP_ORIGIN))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        answer.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(answer.header("vary"), Some("Origin"));
    let secret = answer.body["connectionToken"].as_str().unwrap();
    let mut client = server
        .connect(&format!("?id={secret}"), Some(&token), Some(APP_ORIGIN))
        .await
        .expect("an allowed origin upgrades");
    client.handshake().await;
    client.assert_echo("from the browser").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn other_origins_get_403_on_negotiate_and_on_the_upgrade() {
    let server = spawn_hub(&[("SIGNET__SERVER__ALLOWED_ORIGINS", APP_ORIGIN)]).await;
    let token = user_token("victim");
    let secret = negotiated(&server, "victim").await;
    for origin in [
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com.evil.com",
        "https://app.example.com:8443",
        "null",
    ] {
        let answer = server
            .negotiate("?negotiateVersion=1", Some(&token), Some(origin))
            .await;
        assert_eq!(answer.status, 403, "{origin}");
        assert!(
            answer.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert_eq!(
            server.connect("", Some(&token), Some(origin)).await.err(),
            Some(403),
            "{origin}"
        );
        let query = format!("?id={secret}");
        assert_eq!(
            server
                .connect(&query, Some(&token), Some(origin))
                .await
                .err(),
            Some(403),
            "{origin}"
        );
    }
    // Only the connection negotiated without an origin exists, still unattached.
    assert_eq!(server.connection_count(), 1);
    let mut client = server
        .connect(&format!("?id={secret}"), Some(&token), None)
        .await
        .expect("no origin: allowed");
    client.handshake().await;
    client.assert_echo("without an origin").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn requests_without_origin_and_same_origin_requests_are_allowed() {
    let server = spawn_hub(&[("SIGNET__SERVER__ALLOWED_ORIGINS", APP_ORIGIN)]).await;
    let token = user_token("device");
    let answer = server
        .negotiate("?negotiateVersion=1", Some(&token), None)
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("access-control-allow-origin").is_none());
    let same_origin = format!("http://{}", server.address);
    let answer = server
        .negotiate("?negotiateVersion=1", Some(&token), Some(&same_origin))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut client = server
        .connect("", Some(&token), Some(&same_origin))
        .await
        .expect("same origin upgrades");
    client.handshake().await;
    client.assert_echo("same origin").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_preflight_allows_the_signalr_headers_with_credentials() {
    let server = spawn_hub(&[("SIGNET__SERVER__ALLOWED_ORIGINS", APP_ORIGIN)]).await;
    let preflight = |origin: &'static str| {
        server
            .http
            .request(
                awc::http::Method::OPTIONS,
                server.url("/hubs/home/negotiate?negotiateVersion=1"),
            )
            .insert_header(("Origin", origin))
            .insert_header(("Access-Control-Request-Method", "POST"))
            .insert_header((
                "Access-Control-Request-Headers",
                "authorization, x-signalr-user-agent",
            ))
            .send()
    };
    let res = preflight(APP_ORIGIN).await.expect("preflight sent");
    assert_eq!(res.status().as_u16(), 204);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(header("access-control-allow-origin"), APP_ORIGIN);
    assert_eq!(header("access-control-allow-credentials"), "true");
    let allowed: Vec<String> = header("access-control-allow-headers")
        .split(',')
        .map(|h| h.trim().to_string())
        .collect();
    for needed in ["authorization", "x-signalr-user-agent"] {
        assert!(
            allowed.iter().any(|h| h == needed),
            "{needed} not in {allowed:?}"
        );
    }
    assert!(header("access-control-allow-methods").contains("post"));

    let res = preflight("https://evil.example.com")
        .await
        .expect("preflight sent");
    assert_eq!(res.status().as_u16(), 403);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_eq!(server.connection_count(), 0);
    server.assert_healthy().await;
}
