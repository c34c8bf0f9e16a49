//! Message keys: the documented derivation,
//! base64url_nopad(HMAC-SHA256(envelope master key, "signet-msgkey-v1:" + sid, else jti)), and
//! who may have one. Signet's own tokens get theirs only with login, refresh and the
//! device-token exchange, never from `GET /api/auth/message-key` (a token leaked from a URL
//! must not be enough to sign commands); an external identity provider's token claims its key
//! there, `identity.message_key_claims_max` times (default 1) per message session.

use crate::helpers::*;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::Sha256;
use signet::settings::ExternalIssuer;
use std::process::Command;

const ENVELOPE_SECRET: &str = "envelope-master-key-for-tests-0123456789-abcdef";
const IDP: &str = "https://idp.example";
const IDP_KID: &str = "idp-ed-1";

fn documented(id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(ENVELOPE_SECRET.as_bytes()).unwrap();
    mac.update(format!("signet-msgkey-v1:{id}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A server that also accepts an external identity provider's Ed25519 tokens; returns it with
/// the provider's signing key.
async fn spawn_with_idp(extra_env: &[(&str, &str)]) -> (TestApp, EncodingKey) {
    let keys = tempfile::tempdir().unwrap();
    let private = keys.path().join("idp.key");
    let public = keys.path().join("idp.pub");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "ED25519",
            "-out",
            private.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-pubout",
            "-in",
            private.to_str().unwrap(),
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let ok = Command::new("openssl")
            .args(&args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?}");
    }
    let data_dir = tempfile::tempdir().unwrap();
    let mut env = vec![("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET)];
    env.extend_from_slice(extra_env);
    let mut settings = test_settings(data_dir.path(), &env);
    settings.jwt.external.push(ExternalIssuer {
        issuer: IDP.into(),
        audience: "signet-api".into(),
        kid: Some(IDP_KID.into()),
        algorithm: Some("EdDSA".into()),
        pem_file: Some(public),
        jwks_file: None,
    });
    let key = EncodingKey::from_ed_pem(&std::fs::read(&private).unwrap()).unwrap();
    (spawn_with_settings(settings, data_dir).await, key)
}

fn idp_token(key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(IDP_KID.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn idp_claims(sub: &str) -> Value {
    let mut c = claims(sub);
    c["iss"] = json!(IDP);
    c["aud"] = json!("signet-api");
    c
}

async fn signet_tokens_carry_their_message_key_only_where_they_are_issued(store: Backend) {
    let app = spawn_app_on(store, &[("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET)]).await;
    let session = app.user_session("tara").await;
    let access = session["accessToken"].as_str().unwrap();
    let sid = jwt_payload(access)["sid"].as_str().unwrap().to_string();
    assert_eq!(session["messageKey"], documented(&sid).as_str());
    let refreshed = app.refresh(session["refreshToken"].as_str().unwrap()).await;
    assert_eq!(refreshed.str("messageKey"), documented(&sid));

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
    let device_access = exchanged.str("accessToken");
    let jti = jwt_payload(&device_access)["jti"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(exchanged.str("messageKey"), documented(&jti));

    // Whoever holds only the access token (a user's, a device's, or any token under Signet's
    // own secret) does not get the key.
    for token in [access, device_access.as_str(), user_token("ext").as_str()] {
        let answer = app.get("/api/auth/message-key", Some(token)).await;
        assert_eq!(
            (answer.status, answer.error()),
            (403, "message_key_not_claimable"),
            "{answer:?}"
        );
        assert!(answer.body.get("messageKey").is_none());
    }
    // Never from a query string either: /api ignores it.
    let answer = app
        .get(
            &format!("/api/auth/message-key?access_token={access}"),
            None,
        )
        .await;
    assert_eq!((answer.status, answer.error()), (401, "missing_token"));
    assert_eq!(app.get("/api/auth/message-key", None).await.status, 401);
}

#[actix_web::test]
async fn an_external_token_claims_its_message_key_once() {
    let (app, idp) = spawn_with_idp(&[]).await;
    let mut with_sid = idp_claims("ext-user");
    with_sid["sid"] = json!("external-session");
    let first = idp_token(&idp, &with_sid);
    let answer = app.get("/api/auth/message-key", Some(&first)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body,
        json!({ "messageKey": documented("external-session") })
    );
    assert_eq!(answer.headers.get("cache-control").unwrap(), "no-store");
    // A second claim, with the same token or another token of the session: refused.
    let mut later = with_sid.clone();
    later["jti"] = json!("another-token-of-the-session");
    for token in [first.clone(), idp_token(&idp, &later)] {
        let answer = app.get("/api/auth/message-key", Some(&token)).await;
        assert_eq!(
            (answer.status, answer.error()),
            (409, "message_key_claimed"),
            "{answer:?}"
        );
    }

    // Without a sid the jti names the session; without either there is no key.
    let with_jti = idp_claims("ext-user-2");
    let jti = with_jti["jti"].as_str().unwrap().to_string();
    let answer = app
        .get("/api/auth/message-key", Some(&idp_token(&idp, &with_jti)))
        .await;
    assert_eq!(answer.str("messageKey"), documented(&jti));
    let mut bare = idp_claims("ext-user-3");
    bare.as_object_mut().unwrap().remove("jti");
    let answer = app
        .get("/api/auth/message-key", Some(&idp_token(&idp, &bare)))
        .await;
    assert_eq!((answer.status, answer.error()), (400, "no_message_key"));
}

#[actix_web::test]
async fn message_key_claims_follow_the_configured_maximum() {
    let (app, idp) = spawn_with_idp(&[("SIGNET__IDENTITY__MESSAGE_KEY_CLAIMS_MAX", "2")]).await;
    let token = idp_token(&idp, &idp_claims("twice"));
    for _ in 0..2 {
        assert_eq!(
            app.get("/api/auth/message-key", Some(&token)).await.status,
            200
        );
    }
    let answer = app.get("/api/auth/message-key", Some(&token)).await;
    assert_eq!(
        (answer.status, answer.error()),
        (409, "message_key_claimed")
    );

    let (app, idp) = spawn_with_idp(&[("SIGNET__IDENTITY__MESSAGE_KEY_CLAIMS_MAX", "0")]).await;
    let answer = app
        .get(
            "/api/auth/message-key",
            Some(&idp_token(&idp, &idp_claims("never"))),
        )
        .await;
    assert_eq!(
        (answer.status, answer.error()),
        (403, "message_key_not_claimable")
    );
}

each_store!(signet_tokens_carry_their_message_key_only_where_they_are_issued);
