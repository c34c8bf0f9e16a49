//! Throwaway Redis servers for the tests: Debian's `redis-server` on a free port, in a
//! temporary directory, with persistence off (`--save "" --appendonly no`), under the shell
//! watchdog of [`crate::watchdog`] so it stops when this process ends, however it ends.
//!
//! [`shared`] is one server for the whole test binary, started by the first test that asks;
//! tests on it keep apart by using a channel prefix of their own ([`prefix`]). A test that
//! stops Redis to inject a fault starts its own with [`RedisServer::start`]. The system Redis
//! (port 6379) is never used.

use crate::watchdog::{free_port, spawn_watched, stop_watched};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct RedisServer {
    port: u16,
    /// While this holds the watchdog's standard input open, the server runs.
    watchdog: Mutex<Option<Child>>,
    log: Mutex<PathBuf>,
}

static SHARED: OnceLock<Result<RedisServer, String>> = OnceLock::new();

/// The binary's shared server, started on first use. Panics with the reason when it cannot.
pub fn shared() -> &'static RedisServer {
    match SHARED.get_or_init(|| RedisServer::start_on(None)) {
        Ok(server) => server,
        Err(why) => panic!("cannot start the test Redis: {why}"),
    }
}

/// A channel prefix no other test uses, for tests sharing one server.
pub fn prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{test}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl RedisServer {
    /// A server of the test's own (to stop and restart it), on a free port.
    pub fn start() -> RedisServer {
        Self::start_on(None).unwrap_or_else(|why| panic!("cannot start a test Redis: {why}"))
    }

    fn start_on(port: Option<u16>) -> Result<RedisServer, String> {
        let port = match port {
            Some(port) => port,
            None => free_port()?,
        };
        let server = RedisServer {
            port,
            watchdog: Mutex::new(None),
            log: Mutex::new(PathBuf::new()),
        };
        server.launch()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (as a crash would, for the nodes using it) and waits until it is gone.
    pub fn stop(&self) {
        if let Some(mut watchdog) = self.lock().take() {
            stop_watched(&mut watchdog);
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&self) {
        self.stop();
        if let Err(why) = self.launch() {
            panic!("cannot restart the test Redis: {why}");
        }
    }

    /// Sends one command (inline form) and returns the raw reply, for assertions and faults
    /// (`CLIENT KILL TYPE pubsub`).
    pub fn command(&self, line: &str) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("cannot reach the test Redis: {e}"));
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(format!("{line}\r\n").as_bytes());
        let mut reply = [0u8; 4096];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        let path = self.log.lock().map(|p| p.clone()).unwrap_or_default();
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.watchdog.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn launch(&self) -> Result<(), String> {
        let bin = which("redis-server").ok_or(
            "no redis-server on PATH: install Debian's `redis-server` package (scripts/test.sh \
             does when run as root)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("signet-redis-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            // The watchdog removes it.
            .keep();
        let log = dir.join("redis.log");
        let port = self.port.to_string();
        let dir_arg = dir.display().to_string();
        let server = [
            bin.display().to_string().as_str(),
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir_arg,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        .map(str::to_owned);
        let watchdog = spawn_watched(Command::new("/bin/sh"), "TERM", &dir, &log, &server)?;
        *self.lock() = Some(watchdog);
        if let Ok(mut path) = self.log.lock() {
            *path = log;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.command("PING").starts_with("+PONG")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server did not answer:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.exists())
    })
}

#[test]
fn a_test_redis_starts_answers_and_stops_with_its_directory() {
    let server = RedisServer::start();
    assert_ne!(server.port(), 6379, "never the system Redis");
    assert!(server.command("SET k v").starts_with("+OK"));
    let dir = server.command("CONFIG GET dir");
    assert!(dir.contains("signet-redis-"), "{dir}");
    let dir = dir
        .lines()
        .find(|l| l.contains("signet-redis-"))
        .map(str::to_owned)
        .unwrap_or_default();
    server.restart();
    // Restarted empty, on the same port.
    assert!(server.command("GET k").starts_with("$-1"));
    server.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} was not removed"
    );
}
