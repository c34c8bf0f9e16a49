//! A round-robin load balancer in front of test nodes: Debian's nginx, as users deploy it, run
//! as this test process's own instance (a config, its logs and its temp files in a temporary
//! directory; `-p`, `-c`, `-e` and `-g` so it never touches /etc/nginx or /var/log), listening
//! on a free port, under the shell watchdog of [`crate::watchdog`] so it stops when this
//! process ends, however it ends. The system nginx, if any, is never used.
//!
//! The config is the one the README shows for a cluster: a plain `upstream` (round robin, no
//! `ip_hash` or sticky cookie), WebSocket upgrades proxied, `proxy_buffering off` for SSE, read
//! timeouts above the long-poll timeout. The access log names the node that answered each
//! request (`$upstream_addr`), so a test can see where round robin sent them.

use crate::watchdog::{free_port, spawn_watched, stop_watched};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Balancer {
    port: u16,
    dir: PathBuf,
    /// While this holds the watchdog's standard input open, nginx runs.
    watchdog: Child,
}

/// The `http` block: `upstreams` in round robin, everything under `/` proxied to them.
fn config(dir: &std::path::Path, port: u16, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    let dir = dir.display();
    format!(
        r#"worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    upstream signet {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://signet;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"#
    )
}

impl Balancer {
    /// nginx on a free port, balancing over `upstreams`. Panics with the reason (and nginx's
    /// error log) when it cannot start.
    pub fn start(upstreams: &[SocketAddr]) -> Balancer {
        Self::try_start(upstreams).unwrap_or_else(|why| panic!("cannot start nginx: {why}"))
    }

    fn try_start(upstreams: &[SocketAddr]) -> Result<Balancer, String> {
        let bin = nginx_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("signet-nginx-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            // The watchdog removes it.
            .keep();
        // nginx's workers run as `nobody` under root: they must reach the temp files below.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{e}"))?;
        let port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, port, upstreams)).map_err(|e| format!("{e}"))?;
        let globals = format!("daemon off; pid {}/nginx.pid;", dir.display());
        let server = [
            bin.display().to_string(),
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
            "-e".into(),
            dir.join("error.log").display().to_string(),
            "-g".into(),
            globals,
        ];
        let log = dir.join("nginx.out");
        // QUIT: nginx's graceful stop would wait for open WebSockets; TERM stops at once.
        let watchdog = spawn_watched(Command::new("/bin/sh"), "TERM", &dir, &log, &server)?;
        let balancer = Balancer {
            port,
            dir,
            watchdog,
        };
        balancer.wait_listening()?;
        Ok(balancer)
    }

    fn wait_listening(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("nginx did not listen:\n{}", self.error_log()));
            }
            // Paces a poll for nginx's port, not a fixed wait.
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The upstream each request went to (`$upstream_addr`, the last tried when nginx moved
    /// on from a dead one), one `(request line, upstream)` per logged request.
    pub fn upstreams_used(&self) -> Vec<(String, String)> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let (request, upstream) = line.rsplit_once(' ')?;
                let last = upstream.rsplit(", ").next()?;
                Some((request.to_string(), last.to_string()))
            })
            .collect()
    }

    /// nginx's error log, for failure messages.
    pub fn error_log(&self) -> String {
        let errors = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        let out = std::fs::read_to_string(self.dir.join("nginx.out")).unwrap_or_default();
        format!("{errors}{out}")
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        stop_watched(&mut self.watchdog);
    }
}

/// Debian's nginx (`/usr/sbin` is not on every PATH).
fn nginx_binary() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.exists())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()))
        .ok_or_else(|| {
            "no nginx on PATH or in /usr/sbin: install Debian's `nginx` package \
             (scripts/test.sh does when run as root)"
                .to_string()
        })
}

#[actix_web::test]
async fn nginx_spreads_requests_over_every_upstream_in_turn() {
    let apps = [
        crate::helpers::spawn_app().await,
        crate::helpers::spawn_app().await,
        crate::helpers::spawn_app().await,
    ];
    let balancer = Balancer::start(&apps.iter().map(|a| a.address).collect::<Vec<_>>());
    let client = awc::Client::default();
    for _ in 0..6 {
        let response = client.get(balancer.url("/healthz")).send().await;
        let status = response.map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200), "{}", balancer.error_log());
    }
    // A body larger than nginx keeps in memory goes through its temp files to the node: the
    // node answers (here refusing the bad login), not nginx with a 500.
    let large = format!("{{\"username\":\"{}\"}}", "x".repeat(200_000));
    let response = client
        .post(balancer.url("/api/auth/login"))
        .insert_header(("Content-Type", "application/json"))
        .send_body(large)
        .await;
    let status = response.map(|r| r.status().as_u16());
    assert!(
        matches!(status, Ok(400..=499)),
        "{status:?}\n{}",
        balancer.error_log()
    );
    let used: Vec<String> = balancer
        .upstreams_used()
        .into_iter()
        .filter(|(request, _)| request.starts_with("GET /healthz"))
        .map(|(_, upstream)| upstream)
        .collect();
    assert_eq!(used.len(), 6, "{used:?}");
    // Round robin: each node twice, never the same node twice in a row.
    for app in &apps {
        let address = app.address.to_string();
        assert_eq!(
            used.iter().filter(|u| **u == address).count(),
            2,
            "{used:?}"
        );
    }
    assert!(used.windows(2).all(|w| w[0] != w[1]), "{used:?}");
}
