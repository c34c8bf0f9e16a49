//! The official-client conformance suite: `tests/conformance` drives the npm `@microsoft/signalr`
//! client (with its MessagePack protocol) against a real Signet server started here on port 0.
//! Node's report is streamed into this test's output (`-- --nocapture` to watch it live).

use crate::helpers::{spawn_with_settings, test_settings, TEST_SECRET};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Password of the users created for the suite (test-only, never a real secret).
const CONFORMANCE_PASSWORD: &str = "conformance-password-0123";

/// The whole suite takes about a minute (every scenario over five transport and protocol
/// combinations, some waiting for token expiries); this only stops a hung run.
const SUITE_DEADLINE: Duration = Duration::from_secs(300);

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

#[actix_web::test]
async fn official_signalr_client_passes_the_conformance_suite() {
    let suite = suite_dir();
    for package in ["@microsoft/signalr", "@microsoft/signalr-protocol-msgpack"] {
        assert!(
            suite.join("node_modules").join(package).is_dir(),
            "{package} is not installed: run `npm ci --prefix tests/conformance` \
             (./scripts/test.sh does it)"
        );
    }

    let data_dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(data_dir.path(), &[]);
    let max_message_bytes = settings.hub.max_message_bytes.to_string();
    let app = spawn_with_settings(settings, data_dir).await;

    // Node applies the timeout to each test file as well as each test: a file runs its
    // scenarios over every combination, so it must allow for all of them.
    let mut command = node_test(&app.url(""), 120_000);
    command
        .arg(&suite)
        .env("SIGNET_MAX_MESSAGE_BYTES", &max_message_bytes);
    // Users of the token-lifetime scenarios (login, logout, refresh reuse, admin revoke, devices).
    let users = ["conf-alice", "conf-bob", "conf-carol", "conf-dave"];
    for user in users {
        app.create_user(user, &["user"], CONFORMANCE_PASSWORD).await;
    }
    command
        .env("SIGNET_TEST_USERS", users.join(","))
        .env("SIGNET_TEST_PASSWORD", CONFORMANCE_PASSWORD);
    if let Some(password) = bootstrap_admin_password(app.data_dir.path()) {
        if std::env::var_os("SIGNET_LOGIN_USERNAME").is_none() {
            command
                .env("SIGNET_LOGIN_USERNAME", "admin")
                .env("SIGNET_LOGIN_PASSWORD", password);
        }
    }
    let status = NodeRun::start(command)
        .wait("the conformance suite", SUITE_DEADLINE)
        .await;
    assert!(
        status.success(),
        "the official SignalR client failed the conformance suite ({status}); node's report is above"
    );
}

/// `program` (node, Python) for client scenarios against the server at `url` signed with the
/// test secret, its output piped for [`NodeRun`].
pub(crate) fn client_command(program: &str, url: &str) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SIGNET_URL", url)
        .env("SIGNET_JWT_SECRET", TEST_SECRET)
        // A reporter would colour its output for a terminal, not for captured test output.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `node --test` (one file at a time, the spec reporter, `timeout_ms` per test) as
/// [`client_command`].
pub(crate) fn node_test(url: &str, timeout_ms: u32) -> Command {
    let mut command = client_command("node", url);
    command
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .arg(format!("--test-timeout={timeout_ms}"));
    command
}

/// A running client process (`node --test`, a Python script) whose output is forwarded line by
/// line into the test output, and which is killed if the test ends before it does.
pub(crate) struct NodeRun {
    pub(crate) child: Child,
    forwarders: Vec<JoinHandle<()>>,
}

impl NodeRun {
    pub(crate) fn start(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "cannot run {:?} ({err}): the Node.js suites need Node.js 20 or later",
                command.get_program()
            )
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        // Threads spawned from the test thread share its output capture.
        let forwarders = vec![
            std::thread::spawn(move || forward(stdout, |line| println!("{line}"))),
            std::thread::spawn(move || forward(stderr, |line| eprintln!("{line}"))),
        ];
        Self { child, forwarders }
    }

    /// Waits for the forwarders to reach the end of node's output.
    /// Waits for node without blocking the runtime the server runs on, then forwards the rest
    /// of its output; panics naming `what` if it takes longer than `deadline`.
    pub(crate) async fn wait(mut self, what: &str, deadline: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        let status = loop {
            match self.child.try_wait().expect("node's status") {
                Some(status) => break status,
                None if started.elapsed() > deadline => {
                    panic!("{what} did not finish within {deadline:?}")
                }
                // Paces a poll for node's exit, not a fixed wait.
                None => actix_web::rt::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.finish_output();
        println!("{what}: {:.1} s", started.elapsed().as_secs_f64());
        status
    }

    pub(crate) fn finish_output(&mut self) {
        for forwarder in self.forwarders.drain(..) {
            let _ = forwarder.join();
        }
    }
}

impl Drop for NodeRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward(output: impl Read, print: impl Fn(&str)) {
    for line in BufReader::new(output).lines() {
        match line {
            Ok(line) => print(&line),
            Err(_) => break,
        }
    }
}

/// The password of the `admin` user the identity service creates on a first start, for the
/// suite's revocation test (login, logout, then the logged-out token must not connect). `None`
/// until that service exists: the test then skips itself, seeing `POST /api/auth/login` 404.
pub(crate) fn bootstrap_admin_password(data_dir: &Path) -> Option<String> {
    let mut candidates = std::fs::read_dir(data_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter(|entry| entry.file_name().to_string_lossy().contains("admin"));
    let file = candidates.next()?;
    if candidates.next().is_some() {
        return None;
    }
    let password = std::fs::read_to_string(file.path()).ok()?;
    Some(password.trim().to_string()).filter(|p| !p.is_empty())
}
