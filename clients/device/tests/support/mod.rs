//! Running the real `signet-device` binary as a child process, and reading what it logged.
//!
//! Shared with the server's `tests/client_binaries`; each test crate including it says how to
//! start the device with a `device_command()` at its root.

#![allow(dead_code)]

pub mod proxy;
pub mod test_ca;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `signet-device`; killed when dropped if still running.
pub struct DeviceProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DeviceProcess {
    /// Starts the binary with `args`; the device key goes in through `SIGNET_DEVICE_KEY`, so it
    /// is never on the command line.
    pub fn start(server: &str, device_id: &str, device_key: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("device.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = crate::device_command()
            .args([
                "--server",
                server,
                "--device-id",
                device_id,
                "--name",
                "test door",
            ])
            .args(extra)
            .env("SIGNET_DEVICE_KEY", device_key)
            .env("RUST_LOG", "signet_device=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("signet-device starts");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the device logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "signet-device still running after {limit:?}; its log:\n{}",
                self.log()
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log contains `text`, at most `limit`.
    pub async fn wait_for_log(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < limit,
                "no `{text}` in the device log after {limit:?}:\n{}",
                self.log()
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM, as a service manager would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Asserts that no secret in `secrets` appears in the log.
    pub fn assert_log_free_of(&self, secrets: &[&str]) {
        let log = self.log();
        for secret in secrets {
            assert!(
                !log.contains(secret),
                "the device log contains a secret ({} chars); log:\n{log}",
                secret.len()
            );
        }
    }
}

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
