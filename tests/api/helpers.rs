//! Starting a real Signet server in-process on port 0, and typed helpers to talk to it.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use signet::settings::{self, Settings};
use signet::startup::Application;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The JWT secret every test server uses, unless a test says otherwise.
pub const TEST_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

pub struct TestApp {
    pub address: SocketAddr,
    /// Kept so the directory lives as long as the server; some tests restart on it.
    pub data_dir: tempfile::TempDir,
    pub client: awc::Client,
}

/// Settings for a test server: port 0, a fresh data directory, the test secret.
pub fn test_settings(data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Settings {
    let mut env = vec![
        (
            "SIGNET__SERVER__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "SIGNET__SERVER__DATA_DIR".to_string(),
            data_dir.display().to_string(),
        ),
        ("SIGNET__SERVER__WORKERS".to_string(), "1".to_string()),
        ("SIGNET__JWT__SECRET".to_string(), TEST_SECRET.to_string()),
        // Cheap argon2 so the suite stays fast; the defaults are the secure ones.
        (
            "SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB".to_string(),
            "64".to_string(),
        ),
        (
            "SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS".to_string(),
            "1".to_string(),
        ),
    ];
    for (k, v) in extra_env {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    settings::load_from_str("", std::path::Path::new("test"), env).expect("valid test settings")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra_env: &[(&str, &str)]) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(data_dir.path(), extra_env);
    spawn_with_settings(settings, data_dir).await
}

pub async fn spawn_with_settings(settings: Settings, data_dir: tempfile::TempDir) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("server builds");
    let address = app.address();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        data_dir,
        client: awc::Client::default(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// `GET /api/auth/me` with an optional bearer token; returns status and JSON body.
    pub async fn me(&self, bearer: Option<&str>) -> (u16, Value) {
        self.get_json("/api/auth/me", bearer).await
    }

    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let mut res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let body = res.body().await.expect("body");
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, json)
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Claims a Signet-issued token would carry, valid for ten minutes.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "sub": sub, "roles": ["user"], "jti": format!("jti-{sub}-{now}"),
        "iat": now, "nbf": now, "exp": now + 600, "iss": "signet", "aud": "signet",
    })
}

/// Signs `claims` with an HMAC secret, with the given `kid` (or none).
pub fn sign_hs(secret: &str, kid: Option<&str>, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token signs")
}

/// The `kid` Signet derives for an HMAC secret.
pub fn kid_of(secret: &str) -> String {
    signet::auth::hmac_kid(&signet::settings::Secret::from_text(secret))
}

/// A valid token from the test secret.
pub fn user_token(sub: &str) -> String {
    sign_hs(
        TEST_SECRET,
        Some(&kid_of(TEST_SECRET)),
        Algorithm::HS256,
        &claims(sub),
    )
}
