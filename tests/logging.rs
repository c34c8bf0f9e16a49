//! No token reaches the logs, at any level: the whole output of a server at `trace` is captured
//! around requests that carry tokens in the query string and in the header.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use signet::settings::{self, LogFormat};
use std::io::Write;
use std::sync::{Arc, Mutex};

const SECRET: &str = "logging-test-secret-0123456789-abcdefghijklmnop";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[actix_web::test]
async fn tokens_never_reach_the_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "SIGNET__SERVER__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "SIGNET__SERVER__DATA_DIR".to_string(),
            data_dir.path().display().to_string(),
        ),
        ("SIGNET__SERVER__WORKERS".to_string(), "1".to_string()),
        ("SIGNET__JWT__SECRET".to_string(), SECRET.to_string()),
        ("SIGNET__LOG__LEVEL".to_string(), "trace".to_string()),
        ("SIGNET__LOG__FORMAT".to_string(), "json".to_string()),
    ];
    let settings = settings::load_from_str("", std::path::Path::new("t"), env).unwrap();
    assert_eq!(settings.log.format, LogFormat::Json);
    let captured = Captured::default();
    std::env::remove_var("RUST_LOG");
    assert!(signet::telemetry::init(
        &settings.log,
        captured.clone(),
        false
    ));

    let app = signet::startup::Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.address());
    actix_web::rt::spawn(app.run_until_stopped());

    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "log-user", "exp": now + 300, "iss": "signet", "aud": "signet",
    });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let client = awc::Client::default();
    let paths = [
        format!("/hubs/home/negotiate?negotiateVersion=1&access_token={token}"),
        format!("/hubs/home?id=connection-token-value&access_token={token}"),
        format!("/api/auth/me?access_token={token}"),
    ];
    for path in &paths {
        let _ = client.get(format!("{base}{path}")).send().await.unwrap();
    }
    let res = client
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    // Identity traffic: the audit trail records it, and no password or token reaches the log.
    let admin_password = std::fs::read_to_string(data_dir.path().join("initial-admin-password"))
        .unwrap()
        .trim()
        .to_string();
    let login = |password: &str| {
        client
            .post(format!("{base}/api/auth/login"))
            .send_json(&serde_json::json!({"username": "admin", "password": password}))
    };
    let mut failed = login("a-wrong-password-guess").await.unwrap();
    assert_eq!(failed.status().as_u16(), 401);
    let _ = failed.body().await;
    let mut res = login(&admin_password).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let tokens: serde_json::Value = res.json().await.unwrap();
    let refresh_token = tokens["refreshToken"].as_str().unwrap().to_string();
    let mut res = client
        .post(format!("{base}/api/auth/refresh"))
        .send_json(&serde_json::json!({ "refreshToken": refresh_token }))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let rotated: serde_json::Value = res.json().await.unwrap();
    let secrets = [
        admin_password.clone(),
        "a-wrong-password-guess".to_string(),
        refresh_token,
        rotated["refreshToken"].as_str().unwrap().to_string(),
        rotated["messageKey"].as_str().unwrap().to_string(),
        tokens["accessToken"]
            .as_str()
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap()
            .to_string(),
    ];

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "audit")
        .collect();
    let has = |action: &str, outcome: &str| {
        audit
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome && e["client"] == "127.0.0.1")
    };
    assert!(has("login", "failure"), "{audit:?}");
    assert!(has("login", "success"), "{audit:?}");
    assert!(has("refresh", "success"), "{audit:?}");
    assert!(
        log.contains("initial-admin-password"),
        "the generated admin's password file is logged by path"
    );
    assert!(
        log.contains("access_token=[redacted]"),
        "requests are logged: {log}"
    );
    assert!(
        log.contains("id=[redacted]"),
        "connection tokens are redacted: {log}"
    );
    assert!(
        log.contains("negotiateVersion=1"),
        "other parameters are kept: {log}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token reached the log");
    assert!(
        !log.contains("connection-token-value"),
        "a connection token reached the log"
    );
    assert!(!log.contains(SECRET), "the secret reached the log");
}
