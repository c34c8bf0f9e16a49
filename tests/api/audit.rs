//! `[audit] output = "file"`: the real binary writes audit events as JSON lines to the audit
//! file, rotated by size, and not to its log output.

use crate::helpers::{each_store, Backend, KillOnDrop};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

async fn audit_events_go_to_a_rotated_file_and_not_to_the_log(store: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    if store == Backend::Postgres {
        command.env(
            "SIGNET__STORE__URL",
            crate::postgres::fresh_database().await,
        );
    }
    command
        .env("SIGNET__AUDIT__MAX_FILE_BYTES", "400")
        .env("SIGNET__AUDIT__MAX_FILES", "2");
    let mut child = serve_auditing(command, dir.path(), &data_dir);
    let lines = crate::demo::lines_of(child.0.stdout.take().expect("piped stdout"));
    let mut log = Vec::new();
    let address = listening_address(&lines, &mut log);

    let client = awc::Client::default();
    for i in 0..8 {
        let response = client
            .post(format!("http://{address}/api/auth/login"))
            .send_json(&json!({"username": "admin", "password": format!("wrong {i}")}))
            .await
            .expect("answered");
        assert!(matches!(response.status().as_u16(), 401 | 429));
    }
    child.stop();
    log.extend(lines.try_iter());

    let file = data_dir.join("audit.log");
    let rotated = data_dir.join("audit.log.1");
    let oldest = data_dir.join("audit.log.2");
    assert!(
        oldest.exists(),
        "eight events rotate the file at least twice"
    );
    let mut events = Vec::new();
    for path in [&oldest, &rotated, &file] {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(
            text.len() <= 400,
            "{path:?} is bounded: {} bytes",
            text.len()
        );
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).expect("a JSON line");
            events.push(event);
        }
    }
    assert!(
        !data_dir.join("audit.log.3").exists(),
        "max_files bounds the rotation"
    );
    assert!(
        events.iter().any(|e| e["event"] == "login"
            && e["outcome"] == "failure"
            && e["username"] == "admin"),
        "{events:#?}"
    );
    for event in &events {
        assert_eq!(event["target"], "audit");
        assert!(event["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
    }
    assert!(
        !log.iter().any(|l| l.contains("outcome")),
        "audit events stay out of the log: {log:#?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

each_store!(audit_events_go_to_a_rotated_file_and_not_to_the_log);

/// `command` (the `signet` binary, with any settings of the test's own) serving on `data_dir`:
/// 127.0.0.1 on a free port, one worker, cheap password hashing, audit events to the audit file;
/// standard output piped (see [`listening_address`]).
pub(crate) fn serve_auditing(mut command: Command, dir: &Path, data_dir: &Path) -> KillOnDrop {
    let child = command
        .arg("serve")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("SIGNET__SERVER__LISTEN", "127.0.0.1:0")
        .env("SIGNET__SERVER__DATA_DIR", data_dir)
        .env("SIGNET__SERVER__WORKERS", "1")
        .env("SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB", "64")
        .env("SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS", "1")
        .env("SIGNET__AUDIT__OUTPUT", "file")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("signet serve runs");
    KillOnDrop(child)
}

/// The address `signet serve` logs it listens on (plain log lines), collecting the lines
/// before it into `log`; fails after 30 s.
pub(crate) fn listening_address(lines: &mpsc::Receiver<String>, log: &mut Vec<String>) -> String {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(30), "{log:#?}");
        let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let found = line
            .contains("signet listening")
            .then(|| line.split("address=").nth(1))
            .flatten()
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        log.push(line);
        if let Some(address) = found {
            return address;
        }
    }
}
