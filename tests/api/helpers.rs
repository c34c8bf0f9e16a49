//! Starting a real Signet server in-process on port 0, and typed helpers to talk to it.

use actix_web::dev::ServerHandle;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use signet::connection::{Connection, ConnectionRegistry};
use signet::identity::{Passwords, UserAdmin};
use signet::settings::{self, Settings};
use signet::store::Store;
use signet::Application;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The JWT secret every test server uses, unless a test says otherwise.
pub const TEST_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

pub struct TestApp {
    pub address: SocketAddr,
    /// The `[metrics] listen` listener, when configured.
    pub metrics_address: Option<SocketAddr>,
    /// Kept so the directory lives as long as the server; some tests restart on it.
    pub data_dir: tempfile::TempDir,
    pub client: awc::Client,
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    /// The server's connections, for tests that wait for one to change rather than sleep.
    pub connections: Arc<ConnectionRegistry>,
    handle: ServerHandle,
    scheme: &'static str,
}

/// A password for users the tests create.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// An answer: status, headers and the JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// The body's string field `name`; panics with the whole answer when missing.
    pub fn str(&self, name: &str) -> String {
        match self.body[name].as_str() {
            Some(v) => v.to_string(),
            None => panic!("no string `{name}` in {self:?}"),
        }
    }
}

/// The payload of a JWT, unverified.
pub fn jwt_payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
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

/// Where a test server keeps users, devices and sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the data directory (the default).
    Sqlite,
    /// A fresh database in the test PostgreSQL cluster (`tests/api/postgres.rs`).
    Postgres,
}

/// A server on `backend`, with `extra_env` as [`spawn_app_with`] takes it.
pub async fn spawn_app_on(backend: Backend, extra_env: &[(&str, &str)]) -> TestApp {
    match backend {
        Backend::Sqlite => spawn_app_with(extra_env).await,
        Backend::Postgres => {
            let url = crate::postgres::fresh_database().await;
            spawn_app_with(&postgres_env(&url, extra_env)).await
        }
    }
}

/// `extra_env` with the store at `url`, and a small pool: many test servers share the cluster.
pub fn postgres_env<'a>(url: &'a str, extra_env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("SIGNET__STORE__URL", url),
        ("SIGNET__STORE__MAX_CONNECTIONS", "4"),
    ];
    env.extend_from_slice(extra_env);
    env
}

/// Runs each named `async fn(Backend)` as two tests, `sqlite::<name>` and `postgres::<name>`,
/// so the identity suite is one suite over both stores.
macro_rules! each_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use each_store;

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
    serve(app, settings, data_dir)
}

/// A server of an application's own hubs (`server`, made with `settings`), as a library user
/// starts it.
pub async fn spawn_server(
    server: signet::Server,
    settings: Settings,
    data_dir: tempfile::TempDir,
) -> TestApp {
    let app = server.build().await.expect("server builds");
    serve(app, settings, data_dir)
}

/// Runs a built server in the background; the handle stops it.
fn serve(app: Application, settings: Settings, data_dir: tempfile::TempDir) -> TestApp {
    let address = app.address();
    let metrics_address = app.metrics_address();
    let handle = app.handle();
    let store = app.state().store.clone();
    let connections = app.state().connections.clone();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        metrics_address,
        data_dir,
        client: awc::Client::default(),
        settings,
        store,
        connections,
        handle,
        scheme: "http",
    }
}

impl TestApp {
    /// The server's connection with this connection token, while it is registered.
    pub fn connection(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections.get(id)
    }

    /// Waits until the connection with this token has left the server, failing after `within`.
    pub async fn wait_until_gone(&self, id: &str, within: Duration) {
        eventually(within, "the connection to leave the server", || {
            self.connection(id).is_none()
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.address, path)
    }

    /// For a server started with `[tls]`: requests go over HTTPS with `client`.
    pub fn over_tls(mut self, client: awc::Client) -> Self {
        self.client = client;
        self.scheme = "https";
        self
    }

    /// `GET /api/auth/me` with an optional bearer token; returns status and JSON body.
    pub async fn me(&self, bearer: Option<&str>) -> (u16, Value) {
        self.get_json("/api/auth/me", bearer).await
    }

    /// Stops this server and starts a new one on the same data directory and settings.
    pub async fn restart(self) -> TestApp {
        self.handle.stop(false).await;
        drop(self.store);
        spawn_with_settings(self.settings, self.data_dir).await
    }

    /// Creates a user directly in the store, as `signet user add` does.
    pub async fn create_user(&self, username: &str, roles: &[&str], password: &str) -> String {
        let passwords = Passwords::new(&self.settings.identity).await.unwrap();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        UserAdmin::new(self.store.clone(), passwords)
            .add(username, &roles, password)
            .await
            .expect("user created")
            .id
    }

    /// The password of the `admin` user generated on first start.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("initial-admin-password"))
            .expect("initial admin password file")
            .trim()
            .to_string()
    }

    /// Logs in as the generated `admin`; returns its access token.
    pub async fn admin_token(&self) -> String {
        let answer = self.login("admin", &self.admin_password()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.str("accessToken")
    }

    /// Creates a user with role `user` and logs in; returns the login answer's body.
    pub async fn user_session(&self, username: &str) -> Value {
        self.create_user(username, &["user"], TEST_PASSWORD).await;
        let answer = self.login(username, TEST_PASSWORD).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    pub async fn login(&self, username: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/login",
            None,
            &json!({"username": username, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post(
            "/api/auth/refresh",
            None,
            &json!({ "refreshToken": refresh_token }),
        )
        .await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> Answer {
        self.post_raw(path, bearer, "application/json", body.to_string())
            .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        bearer: Option<&str>,
        content_type: &str,
        body: String,
    ) -> Answer {
        let mut req = self
            .client
            .post(self.url(path))
            .insert_header(("Content-Type", content_type));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let res = req.send_body(body).await.expect("request sent");
        answer(res).await
    }

    pub async fn delete(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut req = self.client.delete(self.url(path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        answer(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        answer(req.send().await.expect("request sent")).await
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

pub async fn answer<S>(mut res: awc::ClientResponse<S>) -> Answer
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.body().limit(1 << 20).await.expect("body");
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Polls `condition` until it holds, failing with `what` after `within`. This waits for an
/// event of the server (which runs on its own threads, on the wall clock), not for a fixed time:
/// the short sleep between checks only paces the loop.
pub async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a token whose `exp` claim is `exp` has expired for the server. `exp` counts
/// whole Unix seconds and the server checks it against its wall clock (`jsonwebtoken`, leeway
/// 0: valid while `now <= exp`), which a test cannot pause: this is a real wait, as short as
/// the claim allows.
pub async fn wait_until_expired(exp: i64) {
    let expired_at = Duration::from_secs(u64::try_from(exp + 1).expect("exp after 1970"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    if let Some(left) = expired_at.checked_sub(now) {
        actix_web::rt::time::sleep(left + Duration::from_millis(50)).await;
    }
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
    signet_protocol::token::hmac_kid(&signet::settings::Secret::from_text(secret))
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

/// A child process killed (and reaped) when dropped, so a failing test leaves none running
/// (one would hold the test's output pipes open).
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}
