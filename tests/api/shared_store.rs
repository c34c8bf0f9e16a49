//! Several nodes on one PostgreSQL database, and that database going away: the users, sessions
//! and refresh rotation every node shares, and outages answered 503 `store_unavailable` fast
//! and recovered from without a restart.

use crate::helpers::*;
use crate::postgres::{cluster, fresh_database};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

async fn node(url: &str, extra_env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(&postgres_env(url, extra_env)).await
}

#[actix_web::test]
async fn a_user_added_on_one_node_logs_in_on_the_other() {
    let url = fresh_database().await;
    let a = node(&url, &[]).await;
    let b = node(&url, &[]).await;
    a.create_user("hana", &["user"], TEST_PASSWORD).await;
    let login = b.login("hana", TEST_PASSWORD).await;
    assert_eq!(login.status, 200, "{login:?}");
    // A session opened on B refreshes on A.
    let refreshed = a.refresh(&login.str("refreshToken")).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
}

#[actix_web::test]
async fn one_refresh_token_redeemed_on_two_nodes_at_once_rotates_once() {
    let url = fresh_database().await;
    let a = node(&url, &[]).await;
    let b = node(&url, &[]).await;
    a.create_user("ivo", &["user"], TEST_PASSWORD).await;
    for round in 0..5 {
        let login = a.login("ivo", TEST_PASSWORD).await;
        assert_eq!(login.status, 200, "{login:?}");
        let token = login.str("refreshToken");
        let (on_a, on_b) = tokio::join!(a.refresh(&token), b.refresh(&token));
        let mut outcomes = [
            (on_a.status, on_a.error().to_string()),
            (on_b.status, on_b.error().to_string()),
        ];
        outcomes.sort();
        assert_eq!(
            outcomes,
            [(200, String::new()), (401, "refresh_token_reused".into())],
            "round {round}: {on_a:?} {on_b:?}"
        );
    }
}

/// A TCP proxy in front of the test cluster that the test cuts and restores: stopping it
/// closes every connection through it and refuses new ones, as a network outage would.
struct Proxy {
    listen: SocketAddr,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(listen: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("proxy listens");
        let listen = listener.local_addr().expect("proxy address");
        let stop = CancellationToken::new();
        let target = ("127.0.0.1", cluster().port());
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let mut client = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Proxy { listen, stop }
    }

    fn cut(&self) {
        self.stop.cancel();
    }
}

#[actix_web::test]
async fn a_database_outage_answers_503_quickly_and_recovers_without_a_restart() {
    let direct = fresh_database().await;
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap()).await;
    let url = direct.replace(
        &format!("127.0.0.1:{}", cluster().port()),
        &proxy.listen.to_string(),
    );
    let app = node(&url, &[("SIGNET__STORE__ACQUIRE_TIMEOUT_SECS", "1")]).await;
    app.create_user("jo", &["user"], TEST_PASSWORD).await;
    assert_eq!(app.login("jo", TEST_PASSWORD).await.status, 200);
    assert_eq!(app.get("/readyz", None).await.status, 200);

    proxy.cut();
    let started = Instant::now();
    let login = app.login("jo", TEST_PASSWORD).await;
    assert_eq!(
        (login.status, login.error()),
        (503, "store_unavailable"),
        "{login:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    assert!(
        !login.body.to_string().contains("127.0.0.1"),
        "the cause stays in the log: {login:?}"
    );
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_ne!(ready.body["checks"]["store"], "ok", "{ready:?}");

    // The database comes back on the same address: the same server recovers.
    let _restored = Proxy::start(proxy.listen).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let login = app.login("jo", TEST_PASSWORD).await;
        if login.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {login:?}");
        // Paces retried logins until the database is back, not a fixed wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.get("/readyz", None).await.status, 200);
}

#[actix_web::test]
async fn logout_on_one_node_closes_the_websocket_on_the_other_within_a_second() {
    let url = fresh_database().await;
    let a = node(&url, &[]).await;
    let b = crate::ws_client::spawn_hub(&postgres_env(&url, &[])).await;
    a.create_user("lu", &["user"], TEST_PASSWORD).await;
    let login = a.login("lu", TEST_PASSWORD).await;
    let access = login.str("accessToken");
    let mut on_b = b.open(&access).await;

    let logout = a
        .post("/api/auth/logout", Some(&access), &serde_json::json!({}))
        .await;
    assert!(logout.status < 300, "{logout:?}");
    let started = Instant::now();
    on_b.expect_close(Duration::from_secs(1)).await;
    assert!(started.elapsed() <= Duration::from_secs(1));
    // And B refuses the logged-out token from now on.
    let negotiate = b.negotiate("", Some(&access), None).await;
    assert_eq!(negotiate.status, 401);
}

#[actix_web::test]
async fn store_copy_moves_a_sqlite_store_to_postgres_and_is_idempotent() {
    let old = spawn_app().await;
    let kept = old.user_session("mia").await;
    let ended = old.login("mia", TEST_PASSWORD).await;
    let logout = old
        .post(
            "/api/auth/logout",
            Some(&ended.str("accessToken")),
            &serde_json::json!({}),
        )
        .await;
    assert!(logout.status < 300, "{logout:?}");
    let dir = old.data_dir.path();
    let from = format!(
        "sqlite://{}",
        dir.join(signet::store::DATABASE_FILE).display()
    );
    let url = fresh_database().await;
    let copy = |extra: &[&str]| {
        let args = [&["store", "copy", "--from", &from, "--to", &url][..], extra].concat();
        crate::cli::signet(dir, None, &args, None)
    };

    let first = crate::cli::ok(&copy(&[]));
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "denied_tokens",
        "revoked_sessions",
    ] {
        assert!(first.contains(table), "{first}");
    }
    assert!(first.contains("copied 7 tables"), "{first}");
    // A second run refuses the filled target, and with --force copies nothing new.
    let refused = copy(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    let again = crate::cli::ok(&copy(&["--force"]));
    assert!(again.contains(" 0 new in the target\n"), "{again}");
    assert!(
        !again
            .lines()
            .any(|l| l.contains("rows read") && !l.ends_with(" 0 new in the target")),
        "{again}"
    );

    // A node on the copy: same users, sessions and revocations.
    let new = node(&url, &[]).await;
    assert_eq!(new.login("mia", TEST_PASSWORD).await.status, 200);
    let refreshed = new.refresh(kept["refreshToken"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    assert_eq!(new.me(Some(&ended.str("accessToken"))).await.0, 401);
    assert_eq!(new.refresh(&ended.str("refreshToken")).await.status, 401);
}

#[actix_web::test]
async fn a_node_reaches_postgres_over_verified_tls() {
    use sqlx::Connection;
    let url = fresh_database().await;
    let ca = cluster().ca_file();
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let mut direct = sqlx::PgConnection::connect(&tls_url)
        .await
        .expect("a TLS connection");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut direct)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the connection is encrypted");
    // A certificate from another CA is refused.
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        other.path(),
        crate::test_ca::TestCa::new("other").cert_pem(),
    )
    .unwrap();
    let wrong = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        other.path().display()
    );
    assert!(sqlx::PgConnection::connect(&wrong).await.is_err());

    let app = node(&tls_url, &[]).await;
    app.create_user("ned", &["user"], TEST_PASSWORD).await;
    assert_eq!(app.login("ned", TEST_PASSWORD).await.status, 200);
}
