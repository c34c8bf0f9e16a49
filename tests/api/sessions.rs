//! Refresh rotation, reuse detection, logout and administrator revocation.

use crate::helpers::*;
use serde_json::json;

async fn refresh_rotates_both_tokens_in_the_same_session(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let first = app.user_session("fran").await;
    let refresh = first["refreshToken"].as_str().unwrap();
    let rotated = app.refresh(refresh).await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    assert_ne!(rotated.str("refreshToken"), refresh);
    let old_claims = jwt_payload(first["accessToken"].as_str().unwrap());
    let new_claims = jwt_payload(&rotated.str("accessToken"));
    assert_eq!(new_claims["sid"], old_claims["sid"], "same session");
    assert_ne!(new_claims["jti"], old_claims["jti"]);
    assert_eq!(
        rotated.body["messageKey"], first["messageKey"],
        "key follows sid"
    );
    // The next rotation works from the new token.
    let again = app.refresh(&rotated.str("refreshToken")).await;
    assert_eq!(again.status, 200, "{again:?}");
}

async fn a_reused_refresh_token_revokes_the_whole_session(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let first = app.user_session("gus").await;
    let stolen = first["refreshToken"].as_str().unwrap();
    let legit = app.refresh(stolen).await;
    assert_eq!(legit.status, 200);
    let sibling_refresh = legit.str("refreshToken");
    let sibling_access = legit.str("accessToken");
    assert_eq!(app.me(Some(&sibling_access)).await.0, 200);

    let reuse = app.refresh(stolen).await;
    assert_eq!(reuse.status, 401, "{reuse:?}");
    assert_eq!(reuse.error(), "refresh_token_reused");
    // Everything descended from that login is dead: refresh and access tokens alike.
    let sibling = app.refresh(&sibling_refresh).await;
    assert_eq!(
        (sibling.status, sibling.error()),
        (401, "invalid_refresh_token")
    );
    for access in [
        sibling_access.as_str(),
        first["accessToken"].as_str().unwrap(),
    ] {
        let (status, body) = app.me(Some(access)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
    }
    // Another session of the same user is untouched.
    let other = app.login("gus", TEST_PASSWORD).await;
    assert_eq!(app.me(Some(&other.str("accessToken"))).await.0, 200);
}

async fn malformed_and_unknown_refresh_tokens_are_refused(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    for token in ["", "short", &"A".repeat(43), &"é".repeat(43)] {
        let answer = app.refresh(token).await;
        assert_eq!(
            (answer.status, answer.error()),
            (401, "invalid_refresh_token")
        );
    }
    let answer = app.post("/api/auth/refresh", None, &json!({})).await;
    assert_eq!(answer.status, 400);
    assert!(answer.str("message").contains("refreshToken"), "{answer:?}");
}

async fn logout_refuses_the_access_token_at_once_and_ends_the_session(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let session = app.user_session("hana").await;
    let access = session["accessToken"].as_str().unwrap();
    let refresh = session["refreshToken"].as_str().unwrap();
    // A second session that the logout names by its refresh token.
    let other = app.login("hana", TEST_PASSWORD).await;
    let third = app.login("hana", TEST_PASSWORD).await;

    let answer = app
        .post(
            "/api/auth/logout",
            Some(access),
            &json!({"refreshToken": other.str("refreshToken")}),
        )
        .await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(app.me(Some(access)).await.0, 401);
    assert_eq!(app.refresh(refresh).await.status, 401);
    assert_eq!(app.me(Some(&other.str("accessToken"))).await.0, 401);
    assert_eq!(app.refresh(&other.str("refreshToken")).await.status, 401);
    // A session not named stays.
    assert_eq!(app.me(Some(&third.str("accessToken"))).await.0, 200);
    assert_eq!(app.refresh(&third.str("refreshToken")).await.status, 200);
    // Logging out needs a valid token.
    let again = app.post("/api/auth/logout", Some(access), &json!({})).await;
    assert_eq!(again.status, 401);
}

async fn logout_does_not_end_another_users_session(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let ivan = app.user_session("ivan").await;
    let judy = app.user_session("judy").await;
    let answer = app
        .post(
            "/api/auth/logout",
            ivan["accessToken"].as_str(),
            &json!({"refreshToken": judy["refreshToken"]}),
        )
        .await;
    assert_eq!(answer.status, 204);
    assert_eq!(
        app.refresh(judy["refreshToken"].as_str().unwrap())
            .await
            .status,
        200
    );
}

async fn an_admin_revokes_every_token_a_user_holds(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let admin = app.admin_token().await;
    let session = app.user_session("kate").await;
    let access = session["accessToken"].as_str().unwrap();
    let refresh = session["refreshToken"].as_str().unwrap();
    let device = app
        .post("/api/devices", Some(access), &json!({"name": "lamp"}))
        .await;
    let device_token = app
        .post(
            "/api/auth/device-token",
            None,
            &json!({"deviceId": device.str("deviceId"), "deviceKey": device.str("deviceKey")}),
        )
        .await
        .str("accessToken");
    // Only an admin may.
    let denied = app
        .post("/api/admin/users/kate/revoke", Some(access), &json!({}))
        .await;
    assert_eq!((denied.status, denied.error()), (403, "forbidden"));

    let answer = app
        .post("/api/admin/users/KATE/revoke", Some(&admin), &json!({}))
        .await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(app.me(Some(access)).await.0, 401);
    assert_eq!(
        app.me(Some(&device_token)).await.0,
        401,
        "her devices' tokens too"
    );
    assert_eq!(app.refresh(refresh).await.status, 401);
    // A new login works, and its token is accepted (issued after the cut-off).
    let fresh = app.login("kate", TEST_PASSWORD).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(app.me(Some(&fresh.str("accessToken"))).await.0, 200);
    // The admin's own token is unaffected; an unknown user is 404.
    let missing = app
        .post("/api/admin/users/nobody/revoke", Some(&admin), &json!({}))
        .await;
    assert_eq!((missing.status, missing.error()), (404, "user_not_found"));
}

async fn tokens_signed_elsewhere_for_the_user_are_cut_off_too(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let admin = app.admin_token().await;
    let user_id = app.create_user("liam", &["user"], TEST_PASSWORD).await;
    // A token minted out of band (no sid), e.g. by `signet token mint`.
    let mut claims = claims(&user_id);
    claims["iat"] = json!(now() - 5);
    let minted = sign_hs(TEST_SECRET, None, jsonwebtoken::Algorithm::HS256, &claims);
    assert_eq!(app.me(Some(&minted)).await.0, 200);
    let answer = app
        .post("/api/admin/users/liam/revoke", Some(&admin), &json!({}))
        .await;
    assert_eq!(answer.status, 204);
    assert_eq!(app.me(Some(&minted)).await.0, 401);
}

async fn hub_negotiation_checks_revocation_too(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let session = app.user_session("nora").await;
    let access = session["accessToken"].as_str().unwrap();
    let path = "/hubs/home/negotiate?negotiateVersion=1";
    let before = app.post(path, Some(access), &json!({})).await;
    assert_eq!(before.status, 200, "{before:?}");
    let answer = app.post("/api/auth/logout", Some(access), &json!({})).await;
    assert_eq!(answer.status, 204);
    let after = app.post(path, Some(access), &json!({})).await;
    assert_eq!(after.status, 401, "{after:?}");
    // The query-string form that browsers use for WebSockets is checked the same way.
    let query = format!("{path}&access_token={access}");
    assert_eq!(app.post(&query, None, &json!({})).await.status, 401);
}

each_store!(
    refresh_rotates_both_tokens_in_the_same_session,
    a_reused_refresh_token_revokes_the_whole_session,
    malformed_and_unknown_refresh_tokens_are_refused,
    logout_refuses_the_access_token_at_once_and_ends_the_session,
    logout_does_not_end_another_users_session,
    an_admin_revokes_every_token_a_user_holds,
    tokens_signed_elsewhere_for_the_user_are_cut_off_too,
    hub_negotiation_checks_revocation_too,
);
