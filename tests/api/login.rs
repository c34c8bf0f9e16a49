//! `POST /api/auth/login`: success, the one failure for unknown user and wrong password,
//! throttling, and what the issued token carries.

use crate::helpers::*;
use serde_json::json;

async fn a_user_logs_in_and_the_token_carries_the_documented_claims(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let user_id = app.create_user("Alice", &["user"], TEST_PASSWORD).await;
    // Usernames are compared in lower case.
    let answer = app.login("ALICE", TEST_PASSWORD).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.headers.get("cache-control").unwrap(), "no-store");
    let access = answer.str("accessToken");
    assert_eq!(answer.str("refreshToken").len(), 43, "256 bits, base64url");
    assert!(!answer.str("messageKey").is_empty());
    // Seconds left on the token when answered: the full lifetime, or a second less when the
    // clock ticked during the store writes (a loaded machine).
    let expires_in = answer.body["expiresIn"].as_i64().expect("expiresIn");
    assert!(
        (15 * 60 - 1..=15 * 60).contains(&expires_in),
        "{expires_in}"
    );

    let claims = jwt_payload(&access);
    assert_eq!(claims["sub"], user_id.as_str(), "sub is the user id");
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["roles"], json!(["user"]));
    assert_eq!(claims["iss"], "signet");
    assert_eq!(claims["aud"], "signet");
    for claim in ["jti", "sid"] {
        assert!(
            claims[claim].as_str().is_some_and(|v| v.len() >= 16),
            "{claim}"
        );
    }
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    assert_eq!(claims["exp"].as_i64(), Some(iat + 15 * 60));
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid_of(TEST_SECRET).as_str()));

    let me = app.get("/api/auth/me", Some(&access)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(
        me.body,
        json!({"sub": user_id, "username": "alice", "roles": ["user"]})
    );
}

async fn the_lifetime_comes_from_configuration(store: Backend) {
    let app = spawn_app_on(
        store,
        &[("SIGNET__JWT__ACCESS_TOKEN_LIFETIME_MINUTES", "7")],
    )
    .await;
    let body = app.user_session("bob").await;
    // Seconds left on the token when answered: the full lifetime, or a second less when the
    // clock ticked during the store writes (a loaded machine).
    let expires_in = body["expiresIn"].as_i64().expect("expiresIn");
    assert!((7 * 60 - 1..=7 * 60).contains(&expires_in), "{expires_in}");
    let claims = jwt_payload(body["accessToken"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        420
    );
}

async fn unknown_user_and_wrong_password_get_the_same_answer(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    app.create_user("carol", &["user"], TEST_PASSWORD).await;
    let wrong = app.login("carol", "not the password").await;
    let unknown = app.login("nobody", TEST_PASSWORD).await;
    let invalid_name = app.login("not a valid name!", TEST_PASSWORD).await;
    for answer in [&wrong, &unknown, &invalid_name] {
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.body, wrong.body, "identical bodies");
        assert_eq!(answer.error(), "invalid_credentials");
    }
}

async fn failed_logins_are_limited_per_username(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    app.create_user("dave", &["user"], TEST_PASSWORD).await;
    for _ in 0..5 {
        assert_eq!(app.login("dave", "wrong-password").await.status, 401);
    }
    let limited = app.login("dave", "wrong-password").await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.error(), "rate_limited");
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Even the right password waits for the window to close.
    assert_eq!(app.login("dave", TEST_PASSWORD).await.status, 429);
}

async fn failed_logins_are_limited_per_client_address_and_successes_do_not_count(store: Backend) {
    let app = spawn_app_on(
        store,
        &[("SIGNET__IDENTITY__LOGIN_MAX_FAILURES_PER_ADDRESS", "3")],
    )
    .await;
    app.create_user("erin", &["user"], TEST_PASSWORD).await;
    for _ in 0..10 {
        assert_eq!(app.login("erin", TEST_PASSWORD).await.status, 200);
    }
    for name in ["x1", "x2", "x3"] {
        assert_eq!(app.login(name, "whatever-password").await.status, 401);
    }
    // A fourth name from the same address: the address has used its allowance.
    let limited = app.login("x4", "whatever-password").await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.headers.contains_key("retry-after"));
}

async fn malformed_bodies_get_400_naming_the_field(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let cases = [
        (r#"{"username": "a", "password": 5}"#, "`password`"),
        (r#"{"username": "a"}"#, "`password`"),
        (r#"{"password": "a"}"#, "`username`"),
        (r#"{"username": ["a"], "password": "b"}"#, "`username`"),
    ];
    for (body, field) in cases {
        let answer = app
            .post_raw("/api/auth/login", None, "application/json", body.into())
            .await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert_eq!(answer.error(), "invalid_json");
        assert!(
            answer.str("message").contains(field),
            "{body}: {answer:?} names {field}"
        );
    }
    let answer = app
        .post_raw(
            "/api/auth/login",
            None,
            "application/json",
            "{\"user".into(),
        )
        .await;
    assert_eq!((answer.status, answer.error()), (400, "invalid_json"));
    let answer = app
        .post_raw("/api/auth/login", None, "text/plain", "{}".into())
        .await;
    assert_eq!(answer.status, 415, "{answer:?}");
}

async fn bodies_over_the_limit_get_413(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let big = json!({"username": "a", "password": "p".repeat(17 * 1024)});
    let answer = app.post("/api/auth/login", None, &big).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.error(), "payload_too_large");
    let small = spawn_app_with(&[("SIGNET__SERVER__MAX_REQUEST_BODY_BYTES", "100")]).await;
    let token = small.admin_token().await;
    let answer = small
        .post(
            "/api/devices",
            Some(&token),
            &json!({"name": "n".repeat(100)}),
        )
        .await;
    assert_eq!(answer.status, 413, "{answer:?}");
}

#[actix_web::test]
async fn the_first_start_creates_admin_with_a_private_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let path = app.data_dir.path().join("initial-admin-password");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = app.admin_token().await;
    let me = app.get("/api/auth/me", Some(&token)).await;
    assert_eq!(me.body["username"], "admin");
    assert_eq!(me.body["roles"], json!(["admin"]));
    // A restart with users present creates nobody and leaves the password as it was.
    let password = app.admin_password();
    let app = app.restart().await;
    assert_eq!(app.admin_password(), password);
    assert_eq!(app.login("admin", &password).await.status, 200);
}

each_store!(
    a_user_logs_in_and_the_token_carries_the_documented_claims,
    the_lifetime_comes_from_configuration,
    unknown_user_and_wrong_password_get_the_same_answer,
    failed_logins_are_limited_per_username,
    failed_logins_are_limited_per_client_address_and_successes_do_not_count,
    malformed_bodies_get_400_naming_the_field,
    bodies_over_the_limit_get_413,
);
