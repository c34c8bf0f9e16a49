//! Users, sessions and revocations live in the database: a restart on the same data directory
//! (or the same PostgreSQL database) keeps them.

use crate::helpers::*;
use serde_json::json;

async fn users_sessions_and_revocations_survive_a_restart(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let kept = app.user_session("uma").await;
    let logged_out = app.login("uma", TEST_PASSWORD).await;
    let logged_out_access = logged_out.str("accessToken");
    let answer = app
        .post("/api/auth/logout", Some(&logged_out_access), &json!({}))
        .await;
    assert_eq!(answer.status, 204);
    let owner_token = kept["accessToken"].as_str().unwrap().to_string();
    let device = app
        .post(
            "/api/devices",
            Some(&owner_token),
            &json!({"name": "thermostat"}),
        )
        .await;
    let (id, old_key) = (device.str("deviceId"), device.str("deviceKey"));
    let old_device_token = app
        .post(
            "/api/auth/device-token",
            None,
            &json!({"deviceId": id, "deviceKey": old_key}),
        )
        .await
        .str("accessToken");
    let rekeyed = app
        .post(
            &format!("/api/devices/{id}/rotate-key"),
            Some(&owner_token),
            &json!({}),
        )
        .await;
    let new_key = rekeyed.str("deviceKey");

    let app = app.restart().await;

    // The user: logs in with the same password.
    assert_eq!(app.login("uma", TEST_PASSWORD).await.status, 200);
    // The session: its refresh token still rotates, and its access token still works.
    assert_eq!(app.me(Some(&owner_token)).await.0, 200);
    let refreshed = app.refresh(kept["refreshToken"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    // The revocations: the logged-out token, its session, and the pre-re-key device token.
    assert_eq!(app.me(Some(&logged_out_access)).await.0, 401);
    assert_eq!(
        app.refresh(&logged_out.str("refreshToken")).await.status,
        401
    );
    assert_eq!(app.me(Some(&old_device_token)).await.0, 401);
    let exchange = |key: String| {
        let app = &app;
        let id = id.clone();
        async move {
            app.post(
                "/api/auth/device-token",
                None,
                &json!({"deviceId": id, "deviceKey": key}),
            )
            .await
            .status
        }
    };
    assert_eq!(exchange(old_key).await, 401);
    assert_eq!(exchange(new_key).await, 200);
}

async fn an_admin_revocation_survives_a_restart(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let admin = app.admin_token().await;
    let session = app.user_session("vera").await;
    let access = session["accessToken"].as_str().unwrap().to_string();
    let answer = app
        .post("/api/admin/users/vera/revoke", Some(&admin), &json!({}))
        .await;
    assert_eq!(answer.status, 204);
    let app = app.restart().await;
    assert_eq!(app.me(Some(&access)).await.0, 401);
    assert_eq!(app.me(Some(&admin)).await.0, 200);
}

each_store!(
    users_sessions_and_revocations_survive_a_restart,
    an_admin_revocation_survives_a_restart,
);
