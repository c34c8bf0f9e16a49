//! No token reaches the logs, at any level: the whole output of servers at `trace` is captured
//! around requests that carry tokens in the query string (under every spelling the query parser
//! accepts) and in the header, around negotiate v0 connections (whose id is their token), and
//! around failed logins whose username may be a password.
//!
//! The subscriber is global, so every test of this binary writes to one capture; each test
//! looks for its own secrets, which no other test knows.

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use signet::settings::{self, LogFormat, LogSettings, Settings};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

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

/// The one capture of this test binary: JSON lines at `trace`.
fn capture() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        std::env::remove_var("RUST_LOG");
        let settings = LogSettings {
            format: LogFormat::Json,
            level: "trace".into(),
        };
        assert!(signet::telemetry::init(&settings, captured.clone(), false));
        captured
    })
}

/// Everything logged so far.
fn log_text() -> String {
    String::from_utf8(capture().0.lock().unwrap().clone()).unwrap()
}

/// The captured JSON events.
fn events() -> Vec<serde_json::Value> {
    log_text()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn settings_for(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> Settings {
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
        ("SIGNET__JWT__SECRET".to_string(), SECRET.to_string()),
        ("SIGNET__LOG__LEVEL".to_string(), "trace".to_string()),
        ("SIGNET__LOG__FORMAT".to_string(), "json".to_string()),
        (
            "SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB".to_string(),
            "64".to_string(),
        ),
        (
            "SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS".to_string(),
            "1".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    settings::load_from_str("", std::path::Path::new("t"), env).unwrap()
}

/// Starts a server on `data_dir` with the capture installed; returns its base URL.
async fn start(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> String {
    capture();
    let app = signet::Application::build(settings_for(data_dir, extra))
        .await
        .unwrap();
    let base = format!("http://{}", app.address());
    actix_web::rt::spawn(app.run_until_stopped());
    base
}

/// An access token for `sub`, valid for five minutes.
fn token_for(sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": sub, "exp": now + 300, "iss": "signet", "aud": "signet",
        "jti": format!("jti-{sub}-{now}"),
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The part of a JWT that makes it a credential.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

#[actix_web::test]
async fn tokens_never_reach_the_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let base = start(data_dir.path(), &[]).await;
    let token = token_for("log-user");
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

    let log = log_text();
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
            .any(|e| e["event"] == action && e["outcome"] == outcome && e["client"] == "127.0.0.1")
    };
    // The audit schema: a UTC timestamp and the event's name on every line.
    for event in &audit {
        let ts = event["ts"].as_str().unwrap_or_default();
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{event}");
        assert!(event["event"].is_string(), "{event}");
        assert!(event.get("action").is_none(), "{event}");
    }
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

/// A request's status; the body is drained so the connection can be reused.
async fn status_of(req: awc::ClientRequest) -> u16 {
    let mut res = req.send().await.unwrap();
    let _ = res.body().await;
    res.status().as_u16()
}

#[actix_web::test]
async fn tokens_under_encoded_parameter_names_are_redacted_and_still_work() {
    let data_dir = tempfile::tempdir().unwrap();
    let base = start(data_dir.path(), &[]).await;
    let client = awc::Client::default();
    let negotiate = |query: String| client.post(format!("{base}/hubs/home/negotiate?{query}"));

    // Each spelling the query parser decodes to `access_token` authenticates, as before.
    let mut secrets = Vec::new();
    for (i, spelling) in [
        "access%5Ftoken",
        "%61ccess_token",
        "%61ccess%5ftoken",
        "%61%63%63%65%73%73%5F%74%6F%6B%65%6E",
    ]
    .into_iter()
    .enumerate()
    {
        let token = token_for(&format!("enc-user-{i}"));
        let query = format!("negotiateVersion=1&{spelling}={token}");
        assert_eq!(status_of(negotiate(query)).await, 200, "{spelling}");
        assert!(log_text().contains(&format!("{spelling}=[redacted]")));
        secrets.push(token);
    }
    let token = token_for("enc-user-repeated");
    let query = format!("access_token={token}&negotiateVersion=1&access%5Ftoken={token}");
    assert_eq!(status_of(negotiate(query)).await, 200, "repeated");
    secrets.push(token);
    // Spellings the parser does not read as `access_token` are refused as before, and their
    // tokens are redacted all the same.
    for (i, spelling) in [
        "+access_token",
        "ACCESS_TOKEN",
        "access_token+",
        "%2561ccess_token",
    ]
    .into_iter()
    .enumerate()
    {
        let token = token_for(&format!("enc-user-unread-{i}"));
        let query = format!("negotiateVersion=1&{spelling}={token}");
        assert_eq!(status_of(negotiate(query)).await, 401, "{spelling}");
        secrets.push(token);
    }

    // Connection tokens under spellings of `id`: each first poll is answered at once.
    let bearer = token_for("enc-conn-user");
    secrets.push(bearer.clone());
    for spelling in ["%69d", "%69%64", "i%64", "id&id"] {
        let mut res = client
            .post(format!("{base}/hubs/home/negotiate?negotiateVersion=1"))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        let connection_token = body["connectionToken"].as_str().unwrap().to_string();
        let query = match spelling {
            "id&id" => format!("id={connection_token}&id={connection_token}"),
            _ => format!("{spelling}={connection_token}"),
        };
        let poll = client
            .get(format!("{base}/hubs/home?{query}"))
            .bearer_auth(&bearer);
        assert_eq!(status_of(poll).await, 200, "{spelling}");
        secrets.push(connection_token);
    }

    let log = log_text();
    for secret in &secrets {
        let shown = if secret.contains('.') {
            signature(secret)
        } else {
            secret.as_str()
        };
        assert!(!log.contains(shown), "a token reached the log");
    }
    assert!(log.contains("%69d=[redacted]"), "polls are logged");
}

/// A WebSocket to `url` with a bearer token that completed the JSON handshake.
async fn open_websocket(
    url: &str,
    bearer: &str,
) -> actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec> {
    let (_, mut socket) = awc::Client::new()
        .ws(url)
        .bearer_auth(bearer)
        .connect()
        .await
        .expect("websocket upgrade");
    socket
        .send(awc::ws::Message::Text(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}".into(),
        ))
        .await
        .unwrap();
    next_text(&mut socket).await;
    socket
}

/// The next text frame's content.
async fn next_text(socket: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>) -> String {
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a readable frame");
        match frame {
            awc::ws::Frame::Text(bytes) => return String::from_utf8_lossy(&bytes).into_owned(),
            awc::ws::Frame::Close(_) => return String::new(),
            _ => continue,
        }
    }
}

#[actix_web::test]
async fn negotiate_v0_connection_tokens_never_reach_the_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let base = start(data_dir.path(), &[]).await;
    let client = awc::Client::default();
    let bearer = token_for("v0-user");
    // Version 0: the connection id is the connection token.
    let mut res = client
        .post(format!("{base}/hubs/home/negotiate"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body.get("connectionToken").is_none(), "{body}");
    let connection_token = body["connectionId"].as_str().unwrap().to_string();

    let ws_url = format!(
        "{}/hubs/home?id={connection_token}",
        base.replace("http", "ws")
    );
    let mut socket = open_websocket(&ws_url, &bearer).await;
    // A message of an unknown type, an in-band refresh by hub method and by HTTP: each is
    // logged with the connection named.
    let refreshed = token_for("v0-user");
    let frames = [
        "{\"type\":99}\u{1e}".to_string(),
        format!(
            "{{\"type\":1,\"invocationId\":\"1\",\"target\":\"RefreshToken\",\"arguments\":[\"{refreshed}\"]}}\u{1e}"
        ),
    ];
    for frame in frames {
        socket
            .send(awc::ws::Message::Text(frame.into()))
            .await
            .unwrap();
    }
    let completion = next_text(&mut socket).await;
    assert!(completion.contains("tokenLifetimeSeconds"), "{completion}");
    let refresh = client
        .post(format!("{base}/hubs/home/refresh?id={connection_token}"))
        .bearer_auth(&refreshed);
    assert_eq!(status_of(refresh).await, 200);
    // Another user's token on the connection closes it (an audited close).
    let intruder = token_for("v0-intruder");
    let mismatch = client
        .get(format!("{base}/hubs/home?id={connection_token}"))
        .bearer_auth(&intruder);
    assert_eq!(status_of(mismatch).await, 403);
    let _ = next_text(&mut socket).await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let closed_audit = |events: &[serde_json::Value]| {
        events.iter().any(|e| {
            e["target"] == "audit" && e["event"] == "connection_closed" && e["sub"] == "v0-user"
        })
    };
    while !closed_audit(&events()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the close was not audited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = log_text();
    assert!(
        !log.contains(&connection_token),
        "a v0 connection token reached the log"
    );
    for token in [&bearer, &refreshed, &intruder] {
        assert!(
            !log.contains(signature(token)),
            "an access token reached the log"
        );
    }
    // The log does name the connection, by a label that grants nothing.
    let named: Vec<serde_json::Value> = events()
        .into_iter()
        .filter(|e| {
            e["connection"]
                .as_str()
                .is_some_and(|c| c.starts_with("v0-"))
        })
        .collect();
    assert!(
        named.iter().any(|e| e["event"] == "token_refreshed"),
        "{named:?}"
    );
    assert!(
        named.iter().any(|e| e["event"] == "connection_closed"),
        "{named:?}"
    );
}

#[actix_web::test]
async fn failed_logins_name_unknown_usernames_only_by_a_mark() {
    let data_dir = tempfile::tempdir().unwrap();
    let base = start(data_dir.path(), &[]).await;
    let client = awc::Client::default();
    let login = |username: &str| {
        client
            .post(format!("{base}/api/auth/login"))
            .send_json(&serde_json::json!({"username": username, "password": "not-it-at-all"}))
    };
    // Passwords typed into the username field: one a valid name, one not.
    let typed = ["tr0ub4dor-and-3", "Correct Horse Battery!"];
    for username in typed.iter().chain(typed.iter()) {
        let mut res = login(username).await.unwrap();
        assert_eq!(res.status().as_u16(), 401);
        let _ = res.body().await;
    }
    // A real user's failed login still names them.
    let mut res = login("admin").await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let _ = res.body().await;

    let log = log_text();
    for username in typed {
        assert!(
            !log.contains(username),
            "an attempted username reached the log"
        );
        assert!(!log.contains(&username.to_lowercase()));
    }
    let failures: Vec<String> = events()
        .iter()
        .filter(|e| e["target"] == "audit" && e["event"] == "login" && e["outcome"] == "failure")
        .filter_map(|e| e["username"].as_str().map(str::to_string))
        .collect();
    let marks: Vec<&String> = failures
        .iter()
        .filter(|name| name.starts_with("unknown:"))
        .collect();
    assert!(marks.len() >= 4, "{failures:?}");
    assert!(marks.iter().all(|m| m.len() == "unknown:".len() + 12
        && m["unknown:".len()..].bytes().all(|b| b.is_ascii_hexdigit())));
    assert!(failures.iter().any(|name| name == "admin"), "{failures:?}");
}

#[actix_web::test]
async fn an_existing_data_directory_open_to_others_is_made_private_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("open-data-dir");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    start(&data_dir, &[]).await;
    let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let warned = events().iter().any(|e| {
        e["level"] == "WARN"
            && e["path"] == data_dir.display().to_string().as_str()
            && e["was"] == "755"
    });
    assert!(warned, "no warning about {}", data_dir.display());
}
