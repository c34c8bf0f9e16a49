//! `signet user add|list|passwd|remove` against a data directory, then a server on it.

use crate::helpers::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn signet_user(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    signet(data_dir, None, &[&["user"], args].concat(), stdin)
}

/// `signet <args>` on `data_dir`, with the store at `store_url` when given.
pub fn signet(
    data_dir: &Path,
    store_url: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_signet"));
    if let Some(url) = store_url {
        command.env("SIGNET__STORE__URL", url);
    }
    let mut child = command
        .args(args)
        .current_dir(data_dir)
        .env_remove("RUST_LOG")
        .env("SIGNET__SERVER__DATA_DIR", data_dir)
        .env("SIGNET__JWT__SECRET", TEST_SECRET)
        .env("SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB", "64")
        .env("SIGNET__IDENTITY__PASSWORD_HASH_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("signet runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn users_are_managed_from_the_command_line(store: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let url = match store {
        Backend::Sqlite => None,
        Backend::Postgres => Some(crate::postgres::fresh_database().await),
    };
    let url = url.as_deref();
    let migrated = ok(&signet(path, url, &["migrate"], None));
    assert!(migrated.contains("is up to date"), "{migrated}");
    let signet_user = |_: &Path, args: &[&str], stdin: Option<&str>| {
        signet(path, url, &[&["user"], args].concat(), stdin)
    };
    let added = ok(&signet_user(
        path,
        &[
            "add",
            "Wendy",
            "--role",
            "admin",
            "--role",
            "user",
            "--password-stdin",
        ],
        Some("first-password-1\n"),
    ));
    assert!(added.contains("created user wendy"), "{added}");
    ok(&signet_user(
        path,
        &["add", "xavier", "--password-stdin"],
        Some("second-password\n"),
    ));

    let listed = ok(&signet_user(path, &["list"], None));
    assert!(
        listed.contains("wendy") && listed.contains("admin,user"),
        "{listed}"
    );
    assert!(listed.contains("xavier"), "{listed}");
    assert!(!listed.contains("first-password"), "no secrets in listings");

    // Refusals: a taken name, a short password, a reserved role, no --password-stdin.
    let taken = signet_user(
        path,
        &["add", "WENDY", "--password-stdin"],
        Some("another-pass\n"),
    );
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already taken"));
    let short = signet_user(path, &["add", "yara", "--password-stdin"], Some("short\n"));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8"));
    let device = signet_user(
        path,
        &["add", "yara", "--role", "device", "--password-stdin"],
        Some("long-enough-pw\n"),
    );
    assert!(String::from_utf8_lossy(&device.stderr).contains("reserved"));
    let no_flag = signet_user(path, &["add", "yara"], None);
    assert!(!no_flag.status.success());
    assert!(String::from_utf8_lossy(&no_flag.stderr).contains("--password-stdin"));

    ok(&signet_user(
        path,
        &["passwd", "wendy", "--password-stdin"],
        Some("changed-password\n"),
    ));
    let removed = ok(&signet_user(path, &["remove", "xavier"], None));
    assert!(removed.contains("removed user xavier"), "{removed}");
    let missing = signet_user(path, &["remove", "xavier"], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such user"));

    // A server on that directory: the CLI's users, and no generated admin (users existed).
    let store_env: Vec<_> = url
        .map(|url| ("SIGNET__STORE__URL", url))
        .into_iter()
        .collect();
    let settings = test_settings(path, &store_env);
    let app = spawn_with_settings(settings, tempfile::tempdir().unwrap()).await;
    assert!(!path.join("initial-admin-password").exists());
    assert_eq!(app.login("wendy", "first-password-1").await.status, 401);
    let login = app.login("wendy", "changed-password").await;
    assert_eq!(login.status, 200, "{login:?}");
    let me = app
        .get("/api/auth/me", Some(&login.str("accessToken")))
        .await;
    assert_eq!(me.body["roles"], serde_json::json!(["admin", "user"]));
    assert_eq!(app.login("xavier", "second-password").await.status, 401);
}

#[actix_web::test]
async fn a_password_change_ends_the_users_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), &[]);
    let app = spawn_with_settings(settings, dir).await;
    let session = app.user_session("zoe").await;
    let out = signet_user(
        app.data_dir.path(),
        &["passwd", "zoe", "--password-stdin"],
        Some("a-brand-new-password\n"),
    );
    ok(&out);
    // The refresh token is dead at once; the access token is cut off from the next start.
    assert_eq!(
        app.refresh(session["refreshToken"].as_str().unwrap())
            .await
            .status,
        401
    );
    let access = session["accessToken"].as_str().unwrap().to_string();
    let app = app.restart().await;
    assert_eq!(app.me(Some(&access)).await.0, 401);
    assert_eq!(app.login("zoe", "a-brand-new-password").await.status, 200);
}

each_store!(users_are_managed_from_the_command_line);
