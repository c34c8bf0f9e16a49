//! The client matrix beyond `@microsoft/signalr` 10 (which `conformance` drives through the whole
//! suite): the core scenarios (connect with a token, echo, broadcast, a server stream, an error,
//! close on expiry) with `@microsoft/signalr` 6 and `@aspnet/signalr` 1.1.4 on every transport
//! they have (`tests/clients/matrix.test.mjs`), and with the Python clients `pysignalr` and
//! `signalr-async` over WebSockets with JSON and MessagePack (`tests/clients/python_clients.py`). docs/clients.md shows
//! the matrix and each client's known bugs.

use crate::conformance::{client_command, NodeRun};
use crate::helpers::{spawn_with_settings, test_settings};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Each client run takes well under half a minute (most of it waiting for token expiries);
/// this only stops a hung run.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

#[actix_web::test]
async fn older_official_clients_pass_the_core_scenarios() {
    let dir = clients_dir();
    for package in [
        "@microsoft/signalr",
        "@microsoft/signalr-protocol-msgpack",
        "@aspnet/signalr",
    ] {
        assert!(
            dir.join("node_modules").join(package).is_dir(),
            "{package} is not installed: run `npm ci --prefix tests/clients` (./scripts/test.sh does it)"
        );
    }
    let data_dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_with_settings(test_settings(data_dir.path(), &[]), data_dir).await;
    let mut command = client_command("node", &app.url(""));
    command.args([
        "--test",
        "--test-concurrency=1",
        "--test-reporter=spec",
        "--test-timeout=60000",
    ]);
    command.arg(&dir);
    let status = NodeRun::start(command)
        .wait("the older official clients", RUN_DEADLINE)
        .await;
    assert!(
        status.success(),
        "an older official client failed a core scenario ({status}); node's report is above"
    );
}

#[actix_web::test]
async fn python_clients_pass_the_core_scenarios() {
    // ./scripts/test.sh sets SIGNET_PYTHON; a venv it made earlier serves a plain `cargo test`.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-venv/bin/python");
    let python = std::env::var("SIGNET_PYTHON")
        .ok()
        .or_else(|| venv.is_file().then(|| venv.display().to_string()))
        .unwrap_or_else(|| {
            panic!(
                "SIGNET_PYTHON is not set: run ./scripts/test.sh, which installs \
                 tests/python/requirements.txt into target/python-venv and sets it"
            )
        });
    let data_dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_with_settings(test_settings(data_dir.path(), &[]), data_dir).await;
    let mut command = client_command(&python, &app.url(""));
    command.arg(clients_dir().join("python_clients.py"));
    let status = NodeRun::start(command)
        .wait("the Python clients", RUN_DEADLINE)
        .await;
    assert!(
        status.success(),
        "a Python client failed a core scenario ({status}); its report is above"
    );
}
