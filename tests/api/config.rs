//! Invalid configuration fails fast, before binding, naming the key and the rule.

use std::net::TcpListener;
use std::process::{Command, Output};

fn signet(args: &[&str], env: &[(&str, &str)], config: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = config {
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signet"));
    cmd.args(args)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("SIGNET__SERVER__DATA_DIR", dir.path().join("data"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("signet runs")
}

fn assert_refused(env: &[(&str, &str)], config: Option<&str>, key: &str, rule: &str) {
    let out = signet(&["check-config"], env, config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{key} should be refused");
    assert!(stderr.contains(key), "error names `{key}`: {stderr}");
    assert!(
        stderr.contains(rule),
        "error states the rule `{rule}`: {stderr}"
    );
}

#[test]
fn each_invalid_setting_is_refused_with_its_key() {
    let short = ("SIGNET__JWT__SECRET", "too-short");
    assert_refused(&[short], None, "jwt.secret", "at least 32 bytes");
    assert_refused(
        &[("SIGNET__ENVELOPE__SECRET", "short")],
        None,
        "envelope.secret",
        "at least 32 bytes",
    );
    for backlog in ["0", "2147483648"] {
        assert_refused(
            &[("SIGNET__SERVER__BACKLOG", backlog)],
            None,
            "server.backlog",
            if backlog == "0" {
                "greater than zero"
            } else {
                "at most 2147483647"
            },
        );
    }
    assert_refused(
        &[("SIGNET__JWT__ISSUER", "")],
        None,
        "jwt.issuer",
        "must not be empty",
    );
    assert_refused(
        &[("SIGNET__JWT__AUDIENCE", " ")],
        None,
        "jwt.audience",
        "must not be empty",
    );
    for minutes in ["4", "1441"] {
        assert_refused(
            &[("SIGNET__JWT__ACCESS_TOKEN_LIFETIME_MINUTES", minutes)],
            None,
            "jwt.access_token_lifetime_minutes",
            "between 5 and 1440",
        );
    }
    for days in ["0", "366"] {
        assert_refused(
            &[("SIGNET__JWT__REFRESH_TOKEN_LIFETIME_DAYS", days)],
            None,
            "jwt.refresh_token_lifetime_days",
            "between 1 and 365",
        );
    }
    for key in ["MAX_REQUEST_BODY_BYTES", "SHUTDOWN_TIMEOUT_SECS", "WORKERS"] {
        let var = format!("SIGNET__SERVER__{key}");
        assert_refused(
            &[(&var, "0")],
            None,
            &key.to_lowercase(),
            "greater than zero",
        );
    }
    for key in [
        "LOGIN_MAX_FAILURES",
        "LOGIN_MAX_FAILURES_PER_ADDRESS",
        "LOGIN_FAILURE_WINDOW_SECS",
        "LOGIN_MAX_BACKOFF_SECS",
        "LOGIN_LIMITER_CAPACITY",
        "MAX_CONCURRENT_PASSWORD_HASHES",
        "PASSWORD_HASH_MEMORY_KIB",
        "PASSWORD_HASH_ITERATIONS",
        "PASSWORD_HASH_PARALLELISM",
        "MAX_DEVICES_PER_USER",
        "MAX_SESSIONS_PER_USER",
        "REVOCATION_EVENT_CAPACITY",
    ] {
        let var = format!("SIGNET__IDENTITY__{key}");
        let name = format!("identity.{}", key.to_lowercase());
        assert_refused(&[(&var, "0")], None, &name, "greater than zero");
    }
    assert_refused(
        &[("SIGNET__HUB__STREAM_BUFFER_ITEMS", "0")],
        None,
        "hub.stream_buffer_items",
        "greater than zero",
    );
    assert_refused(
        &[
            ("SIGNET__IDENTITY__PASSWORD_HASH_MEMORY_KIB", "8"),
            ("SIGNET__IDENTITY__PASSWORD_HASH_PARALLELISM", "2"),
        ],
        None,
        "identity.password_hash_memory_kib",
        "argon2 rejects",
    );
    assert_refused(
        &[(
            "SIGNET__SERVER__TRUSTED_PROXIES",
            "10.0.0.0/8, proxy.example",
        )],
        None,
        "server.trusted_proxies",
        "is not an IP address or network",
    );
    assert_refused(
        &[("SIGNET__SERVER__FORWARDED_HEADER", "x-real-ip")],
        None,
        "server.forwarded_header",
        "unknown variant",
    );
    assert_refused(
        &[],
        Some("[jwt]\nisuer = \"x\"\n"),
        "isuer",
        "unknown field",
    );
    assert_refused(
        &[],
        Some("[sever]\nlisten = \"127.0.0.1:1\"\n"),
        "sever",
        "unknown field",
    );
    assert_refused(
        &[("SIGNET__JWT__LEEWAY", "5")],
        None,
        "leeway",
        "unknown field",
    );
    assert_refused(
        &[],
        Some("[jwt]\nsecret = \"0123456789012345678901234567890123\"\n"),
        "jwt.secret",
        "must not be set in the configuration file",
    );
    assert_refused(
        &[("SIGNET__JWT__LEEWAY_SECS", "soon")],
        None,
        "jwt.leeway_secs",
        "integer",
    );
}

#[test]
fn serve_refuses_a_bad_configuration_before_binding() {
    // Hold a port: if serve tried to bind before validating, it would fail with a bind error.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let out = signet(
        &["serve"],
        &[
            ("SIGNET__SERVER__LISTEN", &addr),
            ("SIGNET__JWT__ISSUER", ""),
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("jwt.issuer"), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
}

#[test]
fn check_config_prints_effective_values_and_masks_secrets() {
    let secret = "a-secret-that-must-never-be-printed-0123456789";
    let out = signet(
        &["check-config"],
        &[
            ("SIGNET__JWT__SECRET", secret),
            ("SIGNET__SERVER__LISTEN", "127.0.0.1:9000"),
            (
                "SIGNET__STORE__URL",
                "postgres://signet:db-password-never-printed@db.example/signet",
            ),
        ],
        Some("[jwt]\nissuer = \"from-file\"\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen = \"127.0.0.1:9000\""), "{stdout}");
    assert!(stdout.contains("issuer = \"from-file\""), "{stdout}");
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(
        stdout.contains("url = \"postgres://signet:[redacted]@db.example/signet\""),
        "{stdout}"
    );
    assert!(!stdout.contains("db-password-never-printed"), "{stdout}");
}

#[test]
fn the_committed_config_is_valid() {
    let config =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let out = signet(&["check-config"], &[], Some(&config));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keygen_prints_a_long_random_secret() {
    let a = signet(&["keygen"], &[], None);
    let b = signet(&["keygen"], &[], None);
    let a = String::from_utf8(a.stdout).unwrap();
    let b = String::from_utf8(b.stdout).unwrap();
    assert!(a.trim().len() >= 64, "{a}");
    assert_ne!(a, b);
}

/// The listen queue the kernel holds for a listening socket on `port`: `ss` shows it as the
/// Send-Q of a socket in LISTEN.
fn listen_backlog(port: u16) -> u32 {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ss line: {line}"))
}

#[actix_web::test]
async fn the_listener_queues_server_backlog_connections() {
    let app = crate::helpers::spawn_app().await;
    assert_eq!(listen_backlog(app.address.port()), 1024, "the default");
    let app = crate::helpers::spawn_app_with(&[("SIGNET__SERVER__BACKLOG", "777")]).await;
    assert_eq!(listen_backlog(app.address.port()), 777);
}
