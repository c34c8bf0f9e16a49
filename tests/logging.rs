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

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
