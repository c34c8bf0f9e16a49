//! The message key equals the documented derivation:
//! base64url_nopad(HMAC-SHA256(envelope master key, "signet-msgkey-v1:" + sid, else jti)).

use crate::helpers::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const ENVELOPE_SECRET: &str = "envelope-master-key-for-tests-0123456789-abcdef";

fn documented(id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(ENVELOPE_SECRET.as_bytes()).unwrap();
    mac.update(format!("signet-msgkey-v1:{id}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[actix_web::test]
async fn message_keys_follow_the_documented_derivation() {
    let app = spawn_app_with(&[("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET)]).await;
    let session = app.user_session("tara").await;
    let access = session["accessToken"].as_str().unwrap();
    let sid = jwt_payload(access)["sid"].as_str().unwrap().to_string();
    assert_eq!(session["messageKey"], documented(&sid).as_str());
    let answer = app.get("/api/auth/message-key", Some(access)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, json!({ "messageKey": documented(&sid) }));

    // A device token has no sid: its jti is used.
    let device = app
        .post("/api/devices", Some(access), &json!({"name": "sensor"}))
        .await;
    let exchanged = app
        .post(
            "/api/auth/device-token",
            None,
            &json!({"deviceId": device.str("deviceId"), "deviceKey": device.str("deviceKey")}),
        )
        .await;
    let jti = jwt_payload(&exchanged.str("accessToken"))["jti"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(exchanged.str("messageKey"), documented(&jti));

    // Tokens of other issuers: sid when present, else jti, else no key.
    let mut with_sid = claims("ext");
    with_sid["sid"] = json!("external-session");
    let with_sid = sign_hs(TEST_SECRET, None, jsonwebtoken::Algorithm::HS256, &with_sid);
    let answer = app.get("/api/auth/message-key", Some(&with_sid)).await;
    assert_eq!(answer.str("messageKey"), documented("external-session"));
    let with_jti = user_token("ext");
    let jti = jwt_payload(&with_jti)["jti"].as_str().unwrap().to_string();
    let answer = app.get("/api/auth/message-key", Some(&with_jti)).await;
    assert_eq!(answer.str("messageKey"), documented(&jti));
    let mut bare = claims("ext");
    bare.as_object_mut().unwrap().remove("jti");
    let bare = sign_hs(TEST_SECRET, None, jsonwebtoken::Algorithm::HS256, &bare);
    let answer = app.get("/api/auth/message-key", Some(&bare)).await;
    assert_eq!((answer.status, answer.error()), (400, "no_message_key"));
    assert_eq!(app.get("/api/auth/message-key", None).await.status, 401);
}
