//! `signet demo`: the server with a demo user, an admin and two devices on a temporary data
//! directory; passwords printed once; everything removed when it stops.

use crate::browser::device_binary;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Reads the demo's standard output on a thread (the pipe blocks), line by line.
pub(crate) fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The word after `label` on a banner line.
fn word_after<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()
}

async fn login(client: &awc::Client, url: &str, username: &str, password: &str) -> Value {
    let mut response = client
        .post(format!("{url}/api/auth/login"))
        .send_json(&json!({ "username": username, "password": password }))
        .await
        .expect("login request");
    assert_eq!(response.status(), 200, "login of {username}");
    response.json().await.expect("login body")
}

#[actix_web::test]
async fn the_demo_serves_a_ready_home_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let device = device_binary();
    let mut child = Command::new(env!("CARGO_BIN_EXE_signet"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--telemetry-interval",
            "1s",
        ])
        .arg("--device-bin")
        .arg(&device)
        .env("TMPDIR", tmp.path())
        .env_remove("RUST_LOG")
        .env("SIGNET__LOG__LEVEL", "info")
        .env("SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB", "64")
        .env("SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("signet demo runs");
    let lines = lines_of(child.stdout.take().expect("piped stdout"));

    let mut output = Vec::new();
    let (mut url, mut user_password, mut admin_password) = (None, None, None);
    let started = Instant::now();
    while !output.iter().any(|l: &String| l.contains("Press Ctrl-C")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no banner: {output:#?}"
        );
        match lines.try_recv() {
            Ok(line) => {
                if let Some(u) = word_after(&line, "open ") {
                    url = Some(u.trim_end_matches('/').to_string());
                }
                if line.trim_start().starts_with("user ") {
                    user_password = word_after(&line, "password ").map(str::to_string);
                }
                if line.trim_start().starts_with("admin ") {
                    admin_password = word_after(&line, "password ").map(str::to_string);
                }
                output.push(line);
            }
            // Paces a poll for the demo's output, not a fixed wait.
            Err(_) => actix_web::rt::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let url = url.expect("the banner names the URL");
    let user_password = user_password.expect("the banner has the demo user's password");
    let admin_password = admin_password.expect("the banner has the admin's password");

    let client = awc::Client::default();
    let admin = login(&client, &url, "admin", &admin_password).await;
    let me: Value = client
        .get(format!("{url}/api/auth/me"))
        .bearer_auth(admin["accessToken"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["admin"]));
    let user = login(&client, &url, "demo", &user_password).await;
    let token = user["accessToken"].as_str().unwrap().to_string();

    // The two devices exist, and when signet-device is at hand they fetch their tokens.
    let expect_running = device.is_file();
    let started = Instant::now();
    loop {
        let devices: Value = client
            .get(format!("{url}/api/devices"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let names: Vec<&str> = devices
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["name"].as_str())
            .collect();
        assert_eq!(names.len(), 2, "{devices}");
        assert!(names.contains(&"Front door") && names.contains(&"Living room light"));
        let connected = devices
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !d["lastTokenAt"].is_null());
        if !expect_running || connected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the demo devices never fetched a token: {devices}"
        );
        // Paces a poll for the devices' first tokens, not a fixed wait.
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    if !expect_running {
        assert!(output
            .iter()
            .any(|l| l.contains("cargo build -p signet-device")));
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the demo did not stop"
        );
        // Paces a poll for the demo's exit, not a fixed wait.
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        output.push(line);
    }
    // Passwords appear once, in the banner, and never in a log line.
    for password in [&user_password, &admin_password] {
        let mentions = output
            .iter()
            .filter(|l| l.contains(password.as_str()))
            .count();
        assert_eq!(mentions, 1, "{output:#?}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}
