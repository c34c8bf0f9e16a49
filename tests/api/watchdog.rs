//! Child servers the tests start (PostgreSQL, Redis) that must not outlive the test process.
//!
//! The server runs under a small shell watchdog that reads our end of a pipe: when this
//! process ends, however it ends (a panic, an abort, SIGKILL), or when the test drops the
//! pipe itself to stop the server mid-test, the watchdog signals the server, waits for it and
//! removes its directory.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `$1` the signal, `$2` the directory to remove, `$3` the server's log, then the server's
/// command line. Reading standard input to its end waits for the test process (or the test)
/// to let go.
const WATCHDOG: &str = r#"
signal="$1"; dir="$2"; log="$3"; shift 3
"$@" >"$log" 2>&1 &
pid=$!
cat >/dev/null
kill -"$signal" "$pid"
wait "$pid"
rm -rf "$dir"
"#;

/// Starts `server` (program then arguments) under the watchdog. `shell` runs `/bin/sh`
/// (directly, or through `runuser` for a server that refuses root); `signal` stops the server
/// cleanly (`INT` for PostgreSQL's fast shutdown, `TERM` for Redis), and `dir` is removed after.
pub fn spawn_watched<S: AsRef<OsStr>>(
    mut shell: Command,
    signal: &str,
    dir: &Path,
    log: &Path,
    server: &[S],
) -> Result<Child, String> {
    shell
        .arg("-c")
        .arg(WATCHDOG)
        .arg("watchdog")
        .arg(signal)
        .arg(dir)
        .arg(log)
        .args(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", server.first().map(AsRef::as_ref)))
}

/// Stops a server started by [`spawn_watched`] and waits until it has exited and its
/// directory is gone.
pub fn stop_watched(watchdog: &mut Child) {
    drop(watchdog.stdin.take());
    let _ = watchdog.wait();
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}
