//! The key ring, seen from outside: what verifies and what is refused.

use crate::helpers::*;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const PREVIOUS_SECRET: &str = "previous-secret-0123456789-abcdefghijklmnopqrstu";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[actix_web::test]
async fn health_answers_ok() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
}

#[actix_web::test]
async fn a_valid_token_proves_its_subject_and_roles() {
    let app = spawn_app().await;
    let mut c = claims("alice");
    c["http://schemas.microsoft.com/ws/2008/06/identity/claims/role"] = json!("admin");
    let token = sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &c,
    );
    let (status, body) = app.me(Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["roles"], json!(["user", "admin"]));
}

#[actix_web::test]
async fn hs384_and_hs512_verify_with_the_same_secret() {
    let app = spawn_app().await;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign_hs(TEST_SECRET, None, alg, &claims("bob"));
        assert_eq!(app.me(Some(&token)).await.0, 200, "{alg:?}");
    }
}

#[actix_web::test]
async fn tokens_signed_with_a_previous_secret_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let previous = dir.path().join("previous.secret");
    std::fs::write(&previous, PREVIOUS_SECRET).unwrap();
    let app = spawn_app_with(&[(
        "SIGNET__JWT__PREVIOUS_SECRET_FILES",
        previous.to_str().unwrap(),
    )])
    .await;
    let with_kid = sign_hs(
        PREVIOUS_SECRET,
        Some(&kid_of(PREVIOUS_SECRET)),
        Algorithm::HS256,
        &claims("old"),
    );
    assert_eq!(app.me(Some(&with_kid)).await.0, 200);
    let without_kid = sign_hs(PREVIOUS_SECRET, None, Algorithm::HS256, &claims("old"));
    assert_eq!(app.me(Some(&without_kid)).await.0, 200);
    // A secret that was never configured does not verify, with or without a kid.
    let stranger = "stranger-secret-0123456789-abcdefghijklmnopqrstu";
    assert_eq!(
        app.me(Some(&sign_hs(
            stranger,
            None,
            Algorithm::HS256,
            &claims("x")
        )))
        .await
        .0,
        401
    );
}

#[actix_web::test]
async fn tokens_minted_by_signet_carry_the_current_kid() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_signet"))
        .args([
            "token", "mint", "--sub", "ops", "--role", "admin", "--ttl", "5m",
        ])
        .current_dir(dir.path())
        .env("SIGNET__JWT__SECRET", TEST_SECRET)
        .env("SIGNET__SERVER__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kid_of(TEST_SECRET).as_str()));
    let app = spawn_app().await;
    let (status, body) = app.me(Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["roles"], json!(["admin"]));
}

/// `header.payload.` with `alg: none`.
fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

#[actix_web::test]
async fn every_bad_token_is_refused_with_401() {
    let app = spawn_app().await;
    let kid = kid_of(TEST_SECRET);
    let sign = |c: &Value| sign_hs(TEST_SECRET, Some(&kid), Algorithm::HS256, c);
    let now = now();
    let mut cases: Vec<(&str, String)> = vec![("alg none", unsigned_token(&claims("eve")))];
    let mut with = |name: &'static str, edit: &dyn Fn(&mut Value)| {
        let mut c = claims("eve");
        edit(&mut c);
        cases.push((name, sign(&c)));
    };
    with("past exp", &|c| c["exp"] = json!(now - 5));
    with("missing exp", &|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    with("future nbf", &|c| c["nbf"] = json!(now + 120));
    with("wrong iss", &|c| c["iss"] = json!("someone-else"));
    with("wrong aud", &|c| c["aud"] = json!("another-api"));
    with("missing sub", &|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    with("empty sub", &|c| c["sub"] = json!(""));
    cases.push((
        "unknown kid",
        sign_hs(
            TEST_SECRET,
            Some("who-knows"),
            Algorithm::HS256,
            &claims("eve"),
        ),
    ));
    let good = sign(&claims("eve"));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = b64(claims("mallory").to_string().as_bytes());
    cases.push(("tampered payload", parts.join(".")));
    cases.push(("garbage", "not-a-jwt".to_string()));

    for (name, token) in cases {
        let (status, body) = app.me(Some(&token)).await;
        assert_eq!(status, 401, "{name} must be refused: {body}");
        assert_eq!(body["error"], "invalid_token", "{name}");
    }
    let (status, body) = app.me(None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("missing_token"))
    );
}

/// Writes an external key pair with openssl; returns (private PEM, public PEM).
fn keypair(dir: &Path, kind: &str) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join(format!("{kind}.key"));
    let public = dir.join(format!("{kind}.pub"));
    let gen: &[&str] = match kind {
        "rsa" => &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        "ec" => &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        _ => &["genpkey", "-algorithm", "ED25519"],
    };
    let ok = Command::new("openssl")
        .args(gen)
        .arg("-out")
        .arg(&private)
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl genpkey {kind}");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl pkey -pubout {kind}");
    (
        std::fs::read(private).unwrap(),
        std::fs::read(public).unwrap(),
    )
}

fn external_claims(sub: &str) -> Value {
    let mut c = claims(sub);
    c["iss"] = json!("https://idp.example");
    c["aud"] = json!("signet-api");
    c
}

fn sign_with(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[actix_web::test]
async fn external_rs256_es256_and_eddsa_tokens_verify_from_pem() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_priv, _) = keypair(dir.path(), "rsa");
    let (ec_priv, _) = keypair(dir.path(), "ec");
    let (ed_priv, _) = keypair(dir.path(), "ed");
    let config = format!(
        r#"
[[jwt.external]]
issuer = "https://idp.example"
audience = "signet-api"
kid = "rsa-1"
algorithm = "RS256"
pem_file = "{0}/rsa.pub"

[[jwt.external]]
issuer = "https://idp.example"
audience = "signet-api"
kid = "ec-1"
algorithm = "ES256"
pem_file = "{0}/ec.pub"

[[jwt.external]]
issuer = "https://idp.example"
audience = "signet-api"
kid = "ed-1"
algorithm = "EdDSA"
pem_file = "{0}/ed.pub"
"#,
        dir.path().display()
    );
    let app = spawn_from_toml(&config).await;
    let rsa = EncodingKey::from_rsa_pem(&rsa_priv).unwrap();
    let ec = EncodingKey::from_ec_pem(&ec_priv).unwrap();
    let ed = EncodingKey::from_ed_pem(&ed_priv).unwrap();
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa-1", &rsa),
        (Algorithm::ES256, "ec-1", &ec),
        (Algorithm::EdDSA, "ed-1", &ed),
    ] {
        let token = sign_with(alg, kid, key, &external_claims("ext-user"));
        let (status, body) = app.me(Some(&token)).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        // The same key with another algorithm is refused: each key is pinned.
        // The issuer and audience belong to the key: Signet's own are refused.
        let token = sign_with(alg, kid, key, &claims("ext-user"));
        assert_eq!(
            app.me(Some(&token)).await.0,
            401,
            "{alg:?} with signet's iss"
        );
    }
    let token = sign_with(Algorithm::RS384, "rsa-1", &rsa, &external_claims("x"));
    assert_eq!(
        app.me(Some(&token)).await.0,
        401,
        "RS384 on an RS256-pinned key"
    );

    // Algorithm confusion: an HS256 token whose "secret" is the RSA public key, naming the
    // RSA key's kid, must never verify.
    let public_pem = std::fs::read(dir.path().join("rsa.pub")).unwrap();
    let forged = sign_with(
        Algorithm::HS256,
        "rsa-1",
        &EncodingKey::from_secret(&public_pem),
        &external_claims("mallory"),
    );
    assert_eq!(
        app.me(Some(&forged)).await.0,
        401,
        "HS256 signed with the public key"
    );
    let forged = sign_with(
        Algorithm::HS256,
        "nope",
        &EncodingKey::from_secret(&public_pem),
        &external_claims("mallory"),
    );
    assert_eq!(app.me(Some(&forged)).await.0, 401);
}

#[actix_web::test]
async fn external_rs256_and_es256_tokens_verify_from_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_priv, _) = keypair(dir.path(), "rsa");
    let (ec_priv, _) = keypair(dir.path(), "ec");
    let rsa = EncodingKey::from_rsa_pem(&rsa_priv).unwrap();
    let ec = EncodingKey::from_ec_pem(&ec_priv).unwrap();
    let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    rsa_jwk.common.key_id = Some("jwks-rsa".into());
    let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    ec_jwk.common.key_id = Some("jwks-ec".into());
    let jwks = JwkSet {
        keys: vec![rsa_jwk, ec_jwk],
    };
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, serde_json::to_vec(&jwks).unwrap()).unwrap();
    let config = format!(
        "[[jwt.external]]\nissuer = \"https://idp.example\"\naudience = \"signet-api\"\njwks_file = \"{}\"\n",
        jwks_path.display()
    );
    let app = spawn_from_toml(&config).await;
    for (alg, kid, key) in [
        (Algorithm::RS256, "jwks-rsa", &rsa),
        (Algorithm::ES256, "jwks-ec", &ec),
    ] {
        let token = sign_with(alg, kid, key, &external_claims("jwks-user"));
        let (status, body) = app.me(Some(&token)).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        assert_eq!(body["sub"], "jwks-user");
    }
    // The EC key signing under the RSA key's kid is a signature mismatch.
    let token = sign_with(Algorithm::ES256, "jwks-rsa", &ec, &external_claims("x"));
    assert_eq!(app.me(Some(&token)).await.0, 401);
}

async fn spawn_from_toml(config: &str) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = signet::settings::load_from_str(
        config,
        Path::new("test.toml"),
        vec![("SIGNET__JWT__SECRET".to_string(), TEST_SECRET.to_string())],
    )
    .expect("valid config");
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.data_dir = data_dir.path().to_path_buf();
    settings.server.workers = 1;
    spawn_with_settings(settings, data_dir).await
}
