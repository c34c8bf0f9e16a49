//! The browser suite: `tests/browser` drives the console and the official `@microsoft/signalr`
//! browser bundle in headless Chromium (Debian's `chromium`, through npm `playwright-core`)
//! against a real Signet server started here on port 0, with a real `signet-device` that the
//! suite starts itself (so the console sees the device come online).
//!
//! `./scripts/test.sh` installs what this needs. Set `SIGNET_SKIP_BROWSER_TESTS=1` to skip it on
//! a machine without Chromium; it is never skipped silently.

use crate::conformance::NodeRun;
use crate::helpers::{spawn_with_settings, test_settings, TEST_PASSWORD, TEST_SECRET};
use crate::test_ca::{TestCa, TlsFiles, Usage};
use serde_json::json;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The suite takes well under a minute; this only stops a hung run.
const SUITE_DEADLINE: Duration = Duration::from_secs(150);
const DEVICE_NAME: &str = "Front door";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `signet-device`, built by `cargo build --workspace` (and `cargo test --workspace`) next to
/// this test binary's directory, or wherever `SIGNET_DEVICE_BIN` says.
pub(crate) fn device_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SIGNET_DEVICE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/api-<hash> -> target/<profile>/signet-device
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("signet-device"))
        .expect("the target directory")
}

/// What the suite needs, or why it cannot run.
fn prerequisites() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("SIGNET_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!(
            "{} not found: install Debian's `chromium` package (./scripts/test.sh does it)",
            chromium.display()
        ));
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        return Err("playwright-core is not installed: run `npm ci --prefix tests/browser`".into());
    }
    let bundle =
        root().join("tests/conformance/node_modules/@microsoft/signalr/dist/browser/signalr.js");
    if !bundle.is_file() {
        return Err(
            "the official SignalR bundle is missing: run `npm ci --prefix tests/conformance`"
                .into(),
        );
    }
    let device = device_binary();
    if !device.is_file() {
        return Err(format!(
            "{} not found: run `cargo build -p signet-device` (cargo test --workspace builds it)",
            device.display()
        ));
    }
    Ok((chromium, bundle, device))
}

/// Screenshots go to `docs/screenshots` with `SIGNET_UPDATE_SCREENSHOTS=1` (to refresh the
/// README's pictures), else to `target/browser-screenshots`, so a test run leaves the work tree
/// as it found it.
fn screenshot_dir() -> PathBuf {
    if std::env::var_os("SIGNET_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        root().join("docs/screenshots")
    } else {
        root().join("target/browser-screenshots")
    }
}

#[actix_web::test]
async fn the_console_and_the_official_browser_client_work_in_chromium() {
    run_suite(None, &[]).await;
}

/// The console over HTTPS (and WSS) with a test certificate: same origin and CSP as over HTTP.
#[actix_web::test]
async fn the_console_works_over_https_in_chromium() {
    let ca = TestCa::new("signet browser test CA");
    let files = TlsFiles::write(&ca.issue(Usage::Server), &ca);
    run_suite(Some((&ca, &files)), &["console.test.mjs"]).await;
}

/// Runs the suite's `files` (all when empty) against a new server, over TLS when given.
async fn run_suite(tls: Option<(&TestCa, &TlsFiles)>, files: &[&str]) {
    if std::env::var_os("SIGNET_SKIP_BROWSER_TESTS").is_some_and(|v| v == "1") {
        println!("SKIPPED: the browser suite (SIGNET_SKIP_BROWSER_TESTS=1)");
        return;
    }
    if !device_binary().is_file() && !root().join("clients/device/Cargo.toml").is_file() {
        // The device client arrives with its own issue; until it is in the tree the console has
        // no device to show.
        println!(
            "SKIPPED: the browser suite needs clients/device (signet-device), not in this tree yet"
        );
        return;
    }
    let (chromium, bundle, device) = prerequisites().unwrap_or_else(|why| {
        panic!("the browser suite cannot run: {why} (or set SIGNET_SKIP_BROWSER_TESTS=1)")
    });

    let data_dir = tempfile::tempdir().expect("temp dir");
    // The console's charts sample every second, so the suite sees them move.
    let tls_env = tls.map(|(_, files)| files.env()).unwrap_or_default();
    let mut env: Vec<(&str, &str)> = tls_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SIGNET__METRICS__CHART_INTERVAL_SECS", "1"));
    let settings = test_settings(data_dir.path(), &env);
    let mut app = spawn_with_settings(settings, data_dir).await;
    if let Some((ca, _)) = tls {
        app = app.over_tls(ca.http_client(None));
    }
    let user_id = app.create_user("alice", &["user"], TEST_PASSWORD).await;
    app.create_user("root", &["admin"], TEST_PASSWORD).await;
    // Someone for the admin to revoke.
    app.create_user("mallory", &["user"], TEST_PASSWORD).await;

    // Alice's front door, provisioned as its owner would; the suite runs it.
    let login = app.login("alice", TEST_PASSWORD).await;
    assert_eq!(login.status, 200, "{login:?}");
    let created = app
        .post(
            "/api/devices",
            Some(&login.str("accessToken")),
            &json!({ "name": DEVICE_NAME }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let key_file = app.data_dir.path().join("front-door.key");
    write_private(&key_file, &created.str("deviceKey"));

    let mut command = Command::new("node");
    command.args(node_websocket_flag());
    command
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            "--test-timeout=60000",
        ])
        .current_dir(root())
        .env("SIGNET_URL", app.url(""))
        .env("SIGNET_JWT_SECRET", TEST_SECRET)
        .env("SIGNET_REVOKE_USER", "mallory")
        .env("SIGNET_USER", "alice")
        .env("SIGNET_USER_PASSWORD", TEST_PASSWORD)
        .env("SIGNET_USER_ID", &user_id)
        .env("SIGNET_ADMIN", "root")
        .env("SIGNET_ADMIN_PASSWORD", TEST_PASSWORD)
        .env("SIGNET_DEVICE_BIN", &device)
        .env("SIGNET_DEVICE_ID", created.str("deviceId"))
        .env("SIGNET_DEVICE_KEY_FILE", &key_file)
        .env("SIGNET_DEVICE_NAME", DEVICE_NAME)
        .env("SIGNET_CHROMIUM", &chromium)
        .env("SIGNET_SIGNALR_BUNDLE", &bundle)
        .env("SIGNET_SCREENSHOT_DIR", screenshot_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if files.is_empty() {
        command.arg(root().join("tests/browser"));
    } else {
        command.args(
            files
                .iter()
                .map(|file| root().join("tests/browser").join(file)),
        );
    }
    if let Some((_, tls_files)) = tls {
        command.env("NODE_EXTRA_CA_CERTS", &tls_files.ca);
    }
    let status = NodeRun::start(command)
        .wait("the browser suite", SUITE_DEADLINE)
        .await;
    assert!(
        status.success(),
        "the browser suite failed ({status}); node's report is above"
    );
}

/// Node 20 and 21 have a WebSocket only behind a flag (the Node test of `clients/js` needs it).
fn node_websocket_flag() -> Option<&'static str> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    (major < 22).then_some("--experimental-websocket")
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("key file");
    file.write_all(text.as_bytes()).expect("key written");
}
