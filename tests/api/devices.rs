//! Device provisioning, key exchange, removal and re-keying.

use crate::helpers::*;
use serde_json::{json, Value};

async fn provision(app: &TestApp, owner_token: &str, name: &str) -> (String, String) {
    let answer = app
        .post("/api/devices", Some(owner_token), &json!({ "name": name }))
        .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.headers.get("cache-control").unwrap(), "no-store");
    (answer.str("deviceId"), answer.str("deviceKey"))
}

async fn exchange(app: &TestApp, id: &str, key: &str) -> Answer {
    app.post(
        "/api/auth/device-token",
        None,
        &json!({"deviceId": id, "deviceKey": key}),
    )
    .await
}

async fn a_device_is_provisioned_and_exchanges_its_key_for_a_token(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let owner = app.user_session("mia").await;
    let owner_token = owner["accessToken"].as_str().unwrap();
    let owner_id = jwt_payload(owner_token)["sub"].clone();
    let (id, key) = provision(&app, owner_token, "porch light").await;
    assert_eq!(key.len(), 43, "256 bits, base64url");

    let answer = exchange(&app, &id, &key).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // Seconds left on the token when answered: the full lifetime, or a second less when the
    // clock ticked during the store writes (a loaded machine).
    let expires_in = answer.body["expiresIn"].as_i64().expect("expiresIn");
    assert!(
        (15 * 60 - 1..=15 * 60).contains(&expires_in),
        "{expires_in}"
    );
    assert!(!answer.str("messageKey").is_empty());
    let token = answer.str("accessToken");
    let claims = jwt_payload(&token);
    assert_eq!(claims["sub"], format!("device:{id}"));
    assert_eq!(claims["roles"], json!(["device"]));
    assert_eq!(claims["owner"], owner_id);
    assert_eq!(claims["name"], "porch light");
    let me = app.get("/api/auth/me", Some(&token)).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["roles"], json!(["device"]));

    let listed = app.get("/api/devices", Some(owner_token)).await;
    assert_eq!(listed.status, 200);
    let devices = listed.body.as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["deviceId"], id.as_str());
    assert_eq!(devices[0]["name"], "porch light");
    assert_eq!(devices[0]["ownerId"], owner_id);
    assert!(devices[0]["lastTokenAt"].is_i64());
    assert!(
        devices[0].get("deviceKey").is_none(),
        "the key is shown once"
    );
}

async fn a_wrong_key_or_unknown_device_gets_401(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let owner = app.user_session("noah").await;
    let (id, key) = provision(&app, owner["accessToken"].as_str().unwrap(), "door").await;
    let (other_id, _) = provision(&app, owner["accessToken"].as_str().unwrap(), "gate").await;
    let mut wrong = key.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).unwrap();
    for (device, key) in [
        (id.as_str(), wrong.as_str()),
        (other_id.as_str(), key.as_str()),
        ("AAAAAAAAAAAAAAAAAAAAAA", key.as_str()),
        ("not/an id", key.as_str()),
        (id.as_str(), ""),
    ] {
        let answer = exchange(&app, device, key).await;
        assert_eq!(answer.status, 401, "{device}: {answer:?}");
        assert_eq!(answer.error(), "invalid_device_credentials");
    }
}

async fn a_deleted_device_loses_its_tokens_and_its_key(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let owner = app.user_session("olga").await;
    let owner_token = owner["accessToken"].as_str().unwrap();
    let (id, key) = provision(&app, owner_token, "heater").await;
    let token = exchange(&app, &id, &key).await.str("accessToken");
    assert_eq!(app.me(Some(&token)).await.0, 200);

    let answer = app
        .delete(&format!("/api/devices/{id}"), Some(owner_token))
        .await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(app.me(Some(&token)).await.0, 401);
    assert_eq!(exchange(&app, &id, &key).await.status, 401);
    let again = app
        .delete(&format!("/api/devices/{id}"), Some(owner_token))
        .await;
    assert_eq!((again.status, again.error()), (404, "device_not_found"));
    let listed = app.get("/api/devices", Some(owner_token)).await;
    assert_eq!(listed.body, json!([]));
}

async fn a_rekeyed_device_loses_its_old_tokens_and_key(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let owner = app.user_session("pete").await;
    let owner_token = owner["accessToken"].as_str().unwrap();
    let (id, old_key) = provision(&app, owner_token, "camera").await;
    let old_token = exchange(&app, &id, &old_key).await.str("accessToken");

    let answer = app
        .post(
            &format!("/api/devices/{id}/rotate-key"),
            Some(owner_token),
            &json!({}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.str("deviceId"), id);
    let new_key = answer.str("deviceKey");
    assert_ne!(new_key, old_key);

    assert_eq!(
        app.me(Some(&old_token)).await.0,
        401,
        "token from before the re-key"
    );
    assert_eq!(exchange(&app, &id, &old_key).await.status, 401, "old key");
    let fresh = exchange(&app, &id, &new_key).await;
    assert_eq!(fresh.status, 200, "{fresh:?}");
    assert_eq!(app.me(Some(&fresh.str("accessToken"))).await.0, 200);
}

async fn only_the_owner_or_an_admin_manages_a_device(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let admin = app.admin_token().await;
    let owner = app.user_session("quinn").await;
    let owner_token = owner["accessToken"].as_str().unwrap();
    let stranger = app.user_session("rosa").await;
    let stranger_token = stranger["accessToken"].as_str().unwrap();
    let (id, key) = provision(&app, owner_token, "blinds").await;
    let (id2, _) = provision(&app, owner_token, "fan").await;

    // A stranger neither sees nor touches it (and learns nothing about its existence).
    assert_eq!(
        app.get("/api/devices", Some(stranger_token)).await.body,
        json!([])
    );
    let answer = app
        .delete(&format!("/api/devices/{id}"), Some(stranger_token))
        .await;
    assert_eq!((answer.status, answer.error()), (404, "device_not_found"));
    let answer = app
        .post(
            &format!("/api/devices/{id}/rotate-key"),
            Some(stranger_token),
            &json!({}),
        )
        .await;
    assert_eq!(answer.status, 404);

    // A device manages no devices.
    let device_token = exchange(&app, &id, &key).await.str("accessToken");
    let answer = app
        .post("/api/devices", Some(&device_token), &json!({"name": "x"}))
        .await;
    assert_eq!((answer.status, answer.error()), (403, "forbidden"));
    assert_eq!(
        app.get("/api/devices", Some(&device_token)).await.status,
        403
    );

    // An admin sees every device and may remove any.
    let all = app.get("/api/devices", Some(&admin)).await;
    let ids: Vec<&Value> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["deviceId"])
        .collect();
    assert_eq!(ids.len(), 2);
    let answer = app
        .delete(&format!("/api/devices/{id2}"), Some(&admin))
        .await;
    assert_eq!(answer.status, 204);
    // Without a token, nothing.
    assert_eq!(app.get("/api/devices", None).await.status, 401);
}

async fn names_are_validated_and_devices_per_user_are_capped(store: Backend) {
    let app = spawn_app_on(store, &[("SIGNET__IDENTITY__MAX_DEVICES_PER_USER", "2")]).await;
    let owner = app.user_session("sam").await;
    let token = owner["accessToken"].as_str().unwrap();
    for name in ["", "   ", &"n".repeat(65), "bad\nname"] {
        let answer = app
            .post("/api/devices", Some(token), &json!({ "name": name }))
            .await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "invalid_request"),
            "{name:?}"
        );
    }
    provision(&app, token, "one").await;
    provision(&app, token, "two").await;
    let answer = app
        .post("/api/devices", Some(token), &json!({"name": "three"}))
        .await;
    assert_eq!(
        (answer.status, answer.error()),
        (409, "device_limit_reached")
    );
}

async fn a_token_whose_subject_is_not_a_local_user_cannot_own_devices(store: Backend) {
    let app = spawn_app_on(store, &[]).await;
    let answer = app
        .post(
            "/api/devices",
            Some(&user_token("external-user")),
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!((answer.status, answer.error()), (403, "forbidden"));
}

each_store!(
    a_device_is_provisioned_and_exchanges_its_key_for_a_token,
    a_wrong_key_or_unknown_device_gets_401,
    a_deleted_device_loses_its_tokens_and_its_key,
    a_rekeyed_device_loses_its_old_tokens_and_key,
    only_the_owner_or_an_admin_manages_a_device,
    names_are_validated_and_devices_per_user_are_capped,
    a_token_whose_subject_is_not_a_local_user_cannot_own_devices,
);
