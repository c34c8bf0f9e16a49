//! Hub rules the README spells out: the same-origin rule and its switch, and which method name
//! a signed envelope binds (the declared one, whatever case the invocation used).

use crate::helpers::{claims, kid_of, sign_hs, TEST_SECRET};
use crate::ws_client::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use signet_protocol::envelope::{derive_message_key, EnvelopeBuilder};

const APP_ORIGIN: &str = "https://app.example.com";
const ENVELOPE_SECRET: &str = "envelope-master-key-for-hub-rules-0123456789";

#[actix_web::test]
async fn same_origin_requests_are_refused_once_the_rule_is_off() {
    let server = spawn_hub(&[
        ("SIGNET__SERVER__ALLOWED_ORIGINS", APP_ORIGIN),
        ("SIGNET__SERVER__ALLOW_SAME_ORIGIN", "false"),
    ])
    .await;
    let token = crate::helpers::user_token("origin-user");
    let same_origin = format!("http://{}", server.address);
    let answer = server
        .negotiate("?negotiateVersion=1", Some(&token), Some(&same_origin))
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["error"], "origin_not_allowed");
    assert_eq!(
        server
            .connect("", Some(&token), Some(&same_origin))
            .await
            .err(),
        Some(403)
    );
    // Listed origins and requests without an origin still connect.
    let listed = server
        .negotiate("?negotiateVersion=1", Some(&token), Some(APP_ORIGIN))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let mut client = server
        .connect("", Some(&token), Some(APP_ORIGIN))
        .await
        .expect("a listed origin upgrades");
    client.handshake().await;
    client.assert_echo("listed origin").await;
    server.assert_healthy().await;
}

#[actix_web::test]
async fn a_signature_binds_the_declared_method_name_whatever_case_is_invoked() {
    let server = spawn_hub(&[("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET)]).await;
    let claims = claims("signer");
    let jti = claims["jti"].as_str().unwrap().to_string();
    let token = sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &claims,
    );
    let key = derive_message_key(ENVELOPE_SECRET.as_bytes(), &jti);
    let mut client = server.open(&token).await;

    let declared = EnvelopeBuilder::new(&key, "/hubs/home", "EchoSigned").build("\"hello\"");
    let completion = client.call("1", "echosigned", json!([declared])).await;
    assert_eq!(completion["result"], json!("hello"), "{completion}");

    let as_invoked = EnvelopeBuilder::new(&key, "/hubs/home", "ECHOSIGNED").build("\"hello\"");
    let error = client
        .call_error("2", "ECHOSIGNED", json!([as_invoked]))
        .await;
    assert_eq!(
        error,
        "Failed to invoke 'EchoSigned': envelope rejected (bad_signature)"
    );
    server.assert_healthy().await;
}
