//! The Python envelope package (`clients/python`): its unit tests against the shared vectors,
//! the package built and installed from its `pyproject.toml`, and `tests/live_server.py`, which
//! signs and verifies envelopes against a real server started here, through the PyPI
//! `signalrcore` client over WebSockets.
//!
//! The interpreter is `SIGNET_PYTHON` (`./scripts/test.sh` points it at `target/python-venv`,
//! where `tests/python/requirements.txt` is installed).

use crate::conformance::NodeRun;
use crate::helpers::{spawn_app_with, TEST_PASSWORD};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The live script takes a few seconds; this only stops a hung run.
const LIVE_DEADLINE: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn package_dir() -> PathBuf {
    root().join("clients/python")
}

/// `SIGNET_PYTHON`, checked to run; panics saying how to get one.
fn python() -> PathBuf {
    let python = std::env::var_os("SIGNET_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "SIGNET_PYTHON is not set: run ./scripts/test.sh, or create a virtual environment \
             with `pip install -r tests/python/requirements.txt` and point SIGNET_PYTHON at its python"
        )
    });
    let runs = Command::new(&python)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(runs, "SIGNET_PYTHON={} does not run", python.display());
    python
}

/// A Python command that writes no `__pycache__` into the work tree.
fn python_command(args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .args(args)
        .current_dir(root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("PYTHONPATH")
        .stdin(Stdio::null());
    command
}

fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "{what} failed ({})", output.status);
    output
}

fn unittest(pythonpath: Option<&Path>) -> Output {
    let mut command = python_command(&[
        "-m",
        "unittest",
        "discover",
        "-v",
        "-s",
        "clients/python/tests",
    ]);
    if let Some(path) = pythonpath {
        command.env("PYTHONPATH", path);
    }
    run(command, "the Python envelope unit tests")
}

#[test]
fn python_signer_reproduces_and_verifies_every_vector() {
    let output = unittest(None);
    let report = String::from_utf8_lossy(&output.stderr);
    for test in [
        "test_signing_reproduces_every_envelope",
        "test_every_verification_gives_the_expected_code",
        "test_message_keys_derive_as_the_server_derives_them",
    ] {
        assert!(
            report.contains(&format!("{test} ")) && !report.contains("skipped"),
            "{test} did not run"
        );
    }
}

#[test]
fn python_package_builds_installs_and_passes_its_tests_installed() {
    // Built from a copy, so the build leaves nothing in the work tree.
    let scratch = tempfile::tempdir().expect("temp dir");
    let source = scratch.path().join("source");
    let site = scratch.path().join("site");
    std::fs::create_dir_all(source.join("src/signet_envelope")).expect("source dir");
    for file in [
        "pyproject.toml",
        "README.md",
        "src/signet_envelope/__init__.py",
        "src/signet_envelope/_envelope.py",
        "src/signet_envelope/py.typed",
    ] {
        std::fs::copy(package_dir().join(file), source.join(file))
            .unwrap_or_else(|err| panic!("copy clients/python/{file}: {err}"));
    }
    let mut install = python_command(&[
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
    ]);
    install.arg(&site).arg(&source);
    run(install, "pip install clients/python");
    for installed in ["signet_envelope/py.typed", "signet_envelope/_envelope.py"] {
        assert!(site.join(installed).is_file(), "{installed} not installed");
    }

    let mut locate = python_command(&["-c", "import signet_envelope as m; print(m.__file__)"]);
    locate.env("PYTHONPATH", &site);
    let imported = String::from_utf8_lossy(&run(locate, "import signet_envelope").stdout)
        .trim()
        .to_string();
    assert!(
        Path::new(&imported).starts_with(&site),
        "imported {imported}, not the installed package"
    );
    unittest(Some(&site));
}

#[actix_web::test]
async fn python_client_signs_and_verifies_against_a_live_server_with_signalrcore() {
    // signalrcore's stop() waits for its receiving thread, which only wakes when the server
    // sends something: a ping every second keeps the script from idling 15 s at its end.
    let app = spawn_app_with(&[("SIGNET__HUB__KEEP_ALIVE_INTERVAL_SECS", "1")]).await;
    app.create_user("py-alice", &["user"], TEST_PASSWORD).await;

    let mut command = python_command(&["clients/python/tests/live_server.py"]);
    command
        .env("SIGNET_URL", app.url(""))
        .env("SIGNET_TEST_USER", "py-alice")
        .env("SIGNET_TEST_PASSWORD", TEST_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The server runs on this test's runtime: wait without blocking it.
    let status = NodeRun::start(command)
        .wait("the Python live-server script", LIVE_DEADLINE)
        .await;
    assert!(
        status.success(),
        "the Python client failed against the live server ({status}); its output is above"
    );
}
