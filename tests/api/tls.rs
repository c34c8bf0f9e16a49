//! HTTPS and WSS: the listener with a test CA's certificate, a client trusting another CA
//! refused, mutual TLS, certificate renewal without dropping connections, HTTP/2's same-origin
//! check, and the official JavaScript client over TLS.

use crate::conformance::{bootstrap_admin_password, NodeRun};
use crate::helpers::{test_settings, user_token, TEST_SECRET};
use crate::test_ca::{client_over, path_string, Issued, TestCa, TlsFiles, Usage};
use crate::ws_client::RawClient;
use signet::Application;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct TlsServer {
    address: SocketAddr,
    files: TlsFiles,
    trigger: CancellationToken,
    data_dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(ca: &TestCa, extra_env: &[(&str, &str)]) -> Self {
        let files = TlsFiles::write(&ca.issue(Usage::Server), ca);
        let data_dir = tempfile::tempdir().expect("temp dir");
        let tls_env = files.env();
        let mut env: Vec<(&str, &str)> = tls_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra_env);
        let settings = test_settings(data_dir.path(), &env);
        let app = Application::build(settings).await.expect("server builds");
        let server = Self {
            address: app.address(),
            trigger: app.shutdown_trigger(),
            files,
            data_dir,
        };
        actix_web::rt::spawn(app.run_until_stopped());
        server
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.address)
    }

    /// `GET /healthz` over `client`: the status, or the connection error's text.
    async fn health(&self, client: &awc::Client) -> Result<u16, String> {
        client
            .get(self.url("https", "/healthz"))
            .send()
            .await
            .map(|res| res.status().as_u16())
            .map_err(|e| e.to_string())
    }

    /// A WSS hub connection that completed the handshake.
    async fn open(&self, client: &awc::Client, token: &str) -> RawClient {
        let (_, io) = client
            .ws(self.url("wss", "/hubs/home"))
            .bearer_auth(token)
            .connect()
            .await
            .expect("wss connection");
        let mut hub = RawClient::from_socket(io);
        hub.handshake().await;
        hub
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.trigger.cancel();
    }
}

#[actix_web::test]
async fn https_and_wss_serve_the_api_and_the_hub_and_plain_http_is_refused() {
    let ca = TestCa::new("signet test CA");
    let server = TlsServer::start(&ca, &[]).await;
    let client = ca.http_client(None);

    assert_eq!(server.health(&client).await, Ok(200));
    let mut hub = server.open(&client, &user_token("tls-alice")).await;
    hub.assert_echo("over-wss").await;

    let plain = awc::Client::builder()
        .timeout(Duration::from_secs(3))
        .finish()
        .get(server.url("http", "/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP must not be served on a TLS listener, got {:?}",
        plain.map(|r| r.status())
    );
}

#[actix_web::test]
async fn a_client_trusting_another_ca_is_refused() {
    let ca = TestCa::new("signet test CA");
    let server = TlsServer::start(&ca, &[]).await;
    let stranger = TestCa::new("another CA");
    let err = server
        .health(&stranger.http_client(None))
        .await
        .expect_err("a certificate from an unknown CA must fail the handshake");
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "the error names the certificate problem: {err}"
    );
}

#[actix_web::test]
async fn over_wss_a_refused_upgrade_is_answered_and_a_large_message_arrives_whole() {
    let ca = TestCa::new("signet test CA");
    let server = TlsServer::start(&ca, &[("SIGNET__HUB__MAX_MESSAGE_BYTES", "262144")]).await;
    let client = ca.http_client(None);
    let token = user_token("tls-large");
    let refused = client
        .ws(server.url("wss", "/hubs/nope"))
        .bearer_auth(&token)
        .connect()
        .await;
    assert!(
        matches!(&refused, Err(awc::error::WsClientError::InvalidResponseStatus(status)) if status.as_u16() == 404),
        "{:?}",
        refused.map(|_| ())
    );

    let (_, io) = client
        .ws(server.url("wss", "/hubs/home"))
        .bearer_auth(&token)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .expect("wss connection");
    let mut hub = RawClient::from_socket(io);
    hub.handshake().await;
    // Larger than a TLS record and than the server's read: it arrives in many pieces.
    let large = "w".repeat(200 * 1024);
    let completion = hub.call("large", "Echo", serde_json::json!([large])).await;
    assert_eq!(completion["result"].as_str(), Some(large.as_str()));
    hub.assert_echo("after the large one").await;
}

#[actix_web::test]
async fn a_renewed_certificate_serves_new_connections_and_established_ones_stay() {
    let old_ca = TestCa::new("old CA");
    let server = TlsServer::start(&old_ca, &[("SIGNET__TLS__RELOAD_INTERVAL_SECS", "1")]).await;
    let mut hub = server
        .open(&old_ca.http_client(None), &user_token("tls-bob"))
        .await;

    // A half-renewed pair (the key of another certificate) is refused; the old one stays.
    let mismatched = Issued {
        chain_pem: old_ca.issue(Usage::Server).chain_pem,
        key_pem: old_ca.issue(Usage::Server).key_pem,
    };
    server.files.replace(&mismatched);
    // A real wait: the reloader polls the files on the wall clock (every second here) and a
    // refused pair changes nothing a client can see, so there is no event to wait for; two
    // and a half intervals make sure it has looked.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        // A fresh client each time: a pooled connection would keep its handshake.
        server.health(&old_ca.http_client(None)).await,
        Ok(200),
        "the current certificate is kept when the new pair is bad"
    );

    let new_ca = TestCa::new("new CA");
    server.files.replace(&new_ca.issue(Usage::Server));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.health(&new_ca.http_client(None)).await != Ok(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        // Paces a poll for the renewed certificate, not a fixed wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        server.health(&old_ca.http_client(None)).await.is_err(),
        "new connections get the new certificate"
    );
    hub.assert_echo("still-connected").await;
}

#[actix_web::test]
async fn mutual_tls_requires_a_client_certificate_and_still_a_token() {
    let ca = TestCa::new("signet test CA");
    let ca_file = {
        // The server's own CA issues the device certificates here.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("clients.pem");
        std::fs::write(&path, ca.cert_pem()).expect("write client CA");
        (dir, path)
    };
    let ca_path = path_string(&ca_file.1);
    let server = TlsServer::start(&ca, &[("SIGNET__TLS__CLIENT_CA_FILE", &ca_path)]).await;

    let anonymous = ca.http_client(None);
    assert!(
        server.health(&anonymous).await.is_err(),
        "a client without a certificate is refused"
    );
    let foreign = TestCa::new("another CA").issue(Usage::Client);
    assert!(
        server
            .health(&ca.http_client(Some(&foreign)))
            .await
            .is_err(),
        "a client certificate from another CA is refused"
    );

    let device = ca.http_client(Some(&ca.issue(Usage::Client)));
    assert_eq!(server.health(&device).await, Ok(200));
    let me = device
        .get(server.url("https", "/api/auth/me"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(
        me.status().as_u16(),
        401,
        "a client certificate does not replace the token"
    );
    let mut hub = server.open(&device, &user_token("tls-device")).await;
    hub.assert_echo("mutual").await;
}

#[actix_web::test]
async fn http2_requests_from_the_same_origin_are_allowed() {
    let ca = TestCa::new("signet test CA");
    let server = TlsServer::start(&ca, &[]).await;
    let client = client_over(ca.client_config(None, &[b"h2", b"http/1.1"]));
    let token = user_token("tls-h2");
    let negotiate = |origin: String| {
        client
            .post(server.url("https", "/hubs/home/negotiate?negotiateVersion=1"))
            .bearer_auth(&token)
            .insert_header(("Origin", origin))
            .send()
    };
    let same = negotiate(server.url("https", "")).await.expect("negotiate");
    assert_eq!(same.version(), awc::http::Version::HTTP_2);
    assert_eq!(same.status().as_u16(), 200, "same origin over HTTP/2");
    let other = negotiate("https://elsewhere.example".into())
        .await
        .expect("negotiate");
    assert_eq!(other.status().as_u16(), 403);
}

#[actix_web::test]
async fn the_official_javascript_client_connects_over_wss() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    assert!(
        suite.join("node_modules/@microsoft/signalr").is_dir(),
        "run `npm ci --prefix tests/conformance` (./scripts/test.sh does it)"
    );
    let ca = TestCa::new("signet test CA");
    let server = TlsServer::start(&ca, &[]).await;
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .arg(suite.join("connect.test.mjs"))
        .env("SIGNET_URL", server.url("https", ""))
        .env("SIGNET_JWT_SECRET", TEST_SECRET)
        .env("NODE_EXTRA_CA_CERTS", &server.files.ca)
        .env("NO_COLOR", "1")
        // The revocation scenario logs in, logs out and tries the dead token.
        .env("SIGNET_LOGIN_USERNAME", "admin")
        .env(
            "SIGNET_LOGIN_PASSWORD",
            bootstrap_admin_password(server.data_dir.path()).expect("bootstrap admin password"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let status = NodeRun::start(command)
        .wait("the official client over TLS", Duration::from_secs(120))
        .await;
    assert!(
        status.success(),
        "the official client failed over TLS ({status})"
    );
}

/// `signet check-config` with the given TLS pair: exit code and standard error.
fn check_config(cert: &Path, key: &Path) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("check-config")
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("SIGNET__SERVER__DATA_DIR", dir.path().join("data"))
        .env("SIGNET__TLS__CERT_FILE", cert)
        .env("SIGNET__TLS__KEY_FILE", key)
        .output()
        .expect("signet runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_validates_the_certificate_and_key() {
    let ca = TestCa::new("signet test CA");
    let files = TlsFiles::write(&ca.issue(Usage::Server), &ca);
    assert_eq!(check_config(&files.cert, &files.key).0, Some(0));

    let other = ca.issue(Usage::Server);
    std::fs::write(&files.key, &other.key_pem).expect("write key");
    let (code, err) = check_config(&files.cert, &files.key);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");

    files.replace(&ca.issue(Usage::ExpiredServer));
    let (code, err) = check_config(&files.cert, &files.key);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expired"), "{err}");

    let missing = files.cert.with_file_name("missing.pem");
    let (code, err) = check_config(&missing, &files.key);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read") && err.contains("missing.pem"),
        "{err}"
    );

    files.replace(&Issued {
        chain_pem: ca.issue(Usage::Server).chain_pem,
        key_pem: "no key here\n".into(),
    });
    let (code, err) = check_config(&files.cert, &files.key);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no usable private key"), "{err}");
}

#[actix_web::test]
async fn a_tls_1_1_client_hello_is_refused_with_a_protocol_version_alert() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("signet test CA");
    let server = TlsServer::start(&ca, &[]).await;
    // A minimal ClientHello offering TLS 1.1 at most: one cipher suite and the one extension
    // rustls requires before it looks at the version (signature_algorithms: ECDSA P-256).
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x42; 32]); // random
    body.extend_from_slice(&[0x00, 0x00, 0x02, 0xc0, 0x2b, 0x01, 0x00]);
    body.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);

    let mut socket = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("connects");
    socket.write_all(&record).await.expect("hello sent");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    // An alert record (21), fatal (2), protocol_version (70): no TLS 1.1 session.
    assert_eq!(answer.first(), Some(&21), "{answer:?}");
    assert_eq!(answer.get(5..7), Some(&[2u8, 70][..]), "{answer:?}");
}
