//! A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary directory, the
//! server on a free port (and a socket in that directory), as `nobody` when the tests run as
//! root. One cluster serves the whole test binary, started by the first test that asks for it
//! (initdb takes seconds); each test gets a database of its own ([`fresh_database`]).
//!
//! The server runs under the shell watchdog of [`crate::watchdog`], so it stops and its
//! directory goes when this process ends, however it ends. The system PostgreSQL is never used.

use crate::watchdog::{free_port, spawn_watched};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates; the cluster trusts local connections.
const SUPERUSER: &str = "signet";

pub struct Cluster {
    port: u16,
    dir: PathBuf,
    /// Holds the watchdog's standard input open while this process lives.
    _watchdog: Mutex<Child>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The shared cluster, started on first use. Panics with the reason when it cannot start.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(why) => panic!("cannot start the test PostgreSQL: {why}"),
    }
}

impl Cluster {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` over TCP.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The CA that issued the server's certificate (for `localhost` and `127.0.0.1`), PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

/// A new, empty database in the shared cluster; returns its URL.
pub async fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let cluster = cluster();
    let name = format!("t_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let admin = cluster.url("postgres");
    // The server may still be starting ("the database system is starting up").
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await?;
            conn.close().await
        }
        .await;
        match result {
            Ok(()) => return cluster.url(&name),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                // Paces retries while the cluster starts, not a fixed wait.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot create database {name}: {e}\n{}", cluster.log()),
        }
    }
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir().ok_or(
        "no initdb under /usr/lib/postgresql/*/bin or on PATH: install Debian's `postgresql` \
         package (scripts/test.sh does when run as root)",
    )?;
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("signet-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        // The watchdog removes it.
        .keep();
    if root {
        run(Command::new("chown").arg("nobody:").arg(&dir))?;
    }
    let data = dir.join("data");
    run(as_owner(root, &bin.join("initdb"), &dir)
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
        .arg("--no-sync"))?;
    write_tls_files(&dir)?;
    if root {
        run(Command::new("chown").arg("-R").arg("nobody:").arg(&dir))?;
    }
    let port = free_port()?;
    let postgres = bin.join("postgres");
    let sock_dir = dir.display().to_string();
    let port_arg = port.to_string();
    let cert = format!("ssl_cert_file={}/server.crt", sock_dir);
    let key = format!("ssl_key_file={}/server.key", sock_dir);
    // Fast settings: the data is thrown away.
    let server: Vec<&std::ffi::OsStr> = [
        postgres.as_os_str(),
        "-D".as_ref(),
        data.as_os_str(),
        "-k".as_ref(),
        sock_dir.as_ref(),
        "-p".as_ref(),
        port_arg.as_ref(),
    ]
    .into_iter()
    .chain(
        [
            "listen_addresses=127.0.0.1",
            "max_connections=300",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "ssl=on",
            cert.as_str(),
            key.as_str(),
        ]
        .into_iter()
        .flat_map(|setting| ["-c".as_ref(), setting.as_ref()]),
    )
    .collect();
    let watchdog = spawn_watched(
        as_owner(root, Path::new("/bin/sh"), &dir),
        "INT",
        &dir,
        &dir.join("postgres.log"),
        &server,
    )?;
    let cluster = Cluster {
        port,
        dir,
        _watchdog: Mutex::new(watchdog),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("postgres did not listen:\n{}", cluster.log()));
        }
        // Paces a poll for the cluster's port, not a fixed wait.
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(cluster)
}

/// A certificate for the server from a throwaway CA, so clients can use `sslmode=verify-full`.
fn write_tls_files(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let ca = crate::test_ca::TestCa::new("signet test postgres CA");
    let issued = ca.issue(crate::test_ca::Usage::Server);
    let write = |name: &str, text: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(dir.join(name))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{name}: {e}"))
    };
    write("server.crt", &issued.chain_pem)?;
    write("server.key", &issued.key_pem)?;
    write("ca.crt", &ca.cert_pem())
}

/// The newest `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program` as the cluster's owner: `nobody` under root (PostgreSQL refuses root).
fn as_owner(root: bool, program: &Path, dir: &Path) -> Command {
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir(dir);
    command
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
