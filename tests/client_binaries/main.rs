//! The client binaries, `signet-device` and `signet-bench`, against the real server started
//! in-process on port 0. These tests live with the server because they need the server crate,
//! which the clients themselves do not depend on (they share `signet-protocol` with it).
//!
//! Cargo builds only this package's binaries for its tests, so this test binary is also the
//! clients: started with `SIGNET_TEST_RUN_AS=signet-device` (or `signet-bench`) it is that
//! program, its arguments parsed by that program's command line. A test starts a client with
//! [`client_command`]. libtest would read those arguments as its own, so this binary has no
//! harness (`harness = false`); [`main`] runs the tests: `cargo test --test client_binaries
//! [FILTER...]` runs the tests whose names contain a filter, `--skip FILTER` leaves some out,
//! `--list` lists them, `--test-threads N` (or `RUST_TEST_THREADS`) bounds how many run at once.

#[path = "../../clients/device/tests/support/mod.rs"]
mod support;

// The cluster harness of the api tests (Signet processes on a throwaway Redis and PostgreSQL,
// nginx in front) and what it stands on, shared by path rather than copied.
#[allow(dead_code)]
#[path = "../api/balancer.rs"]
mod balancer;
#[allow(dead_code)]
#[path = "../api/cluster_harness.rs"]
mod cluster_harness;
#[allow(unused)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../api/redis_server.rs"]
mod redis_server;
#[allow(dead_code)]
#[path = "../api/test_ca.rs"]
mod test_ca;
#[allow(dead_code)]
#[path = "../api/watchdog.rs"]
mod watchdog;

mod bench;
mod device;

use clap::Parser;
use std::process::{Command, ExitCode};
use std::sync::Mutex;

const RUN_AS: &str = "SIGNET_TEST_RUN_AS";

/// A test: its name and its body, which fails by panicking.
pub type Test = (&'static str, fn());

/// `(name, body)` for async test functions, each run on a new actix system as
/// `#[actix_rt::test]` would.
#[macro_export]
macro_rules! actix_tests {
    ($($test:ident),* $(,)?) => {
        &[$((
            concat!("device::", stringify!($test)),
            || actix_rt::System::new().block_on($test()),
        )),*]
    };
}

/// This binary as `program` (`signet-device` or `signet-bench`).
pub fn client_command(program: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command.env(RUN_AS, program);
    command
}

/// The device [`support::DeviceProcess`] starts.
pub fn device_command() -> Command {
    client_command("signet-device")
}

fn main() -> ExitCode {
    match std::env::var(RUN_AS).as_deref() {
        Ok("signet-device") => signet_device::cli::run(signet_device::cli::Cli::parse()),
        Ok("signet-bench") => signet_bench::cli::run(signet_bench::cli::Cli::parse()),
        _ => run(device::TESTS.iter().chain(bench::TESTS).copied().collect()),
    }
}

/// The test selection a command line asks for.
#[derive(Default)]
struct Selection {
    filters: Vec<String>,
    skip: Vec<String>,
    list: bool,
    ignored_only: bool,
    threads: Option<usize>,
}

impl Selection {
    fn from_args(mut args: impl Iterator<Item = String>) -> Self {
        let mut selection = Self::default();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
                _ => (arg.clone(), None),
            };
            let mut value = || inline.map(str::to_string).or_else(|| args.next());
            match flag.as_str() {
                "--list" => selection.list = true,
                "--ignored" => selection.ignored_only = true,
                "--skip" => selection.skip.extend(value()),
                "--test-threads" => selection.threads = value().and_then(|n| n.parse().ok()),
                "--format" | "--color" | "--logfile" | "-Z" => drop(value()),
                flag if flag.starts_with('-') => {}
                _ => selection.filters.push(arg),
            }
        }
        selection
    }

    fn wants(&self, name: &str) -> bool {
        // None of these tests is `#[ignore]`d.
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str())))
            && !self.skip.iter().any(|s| name.contains(s.as_str()))
    }
}

fn run(tests: Vec<Test>) -> ExitCode {
    let selection = Selection::from_args(std::env::args().skip(1));
    let selected: Vec<Test> = tests
        .into_iter()
        .filter(|(name, _)| selection.wants(name))
        .collect();
    if selection.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let threads = selection
        .threads
        .or_else(|| std::env::var("RUST_TEST_THREADS").ok()?.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    println!("\nrunning {} tests", selected.len());
    let count = selected.len();
    let queue = Mutex::new(selected.into_iter());
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let next = queue.lock().map(|mut queue| queue.next());
                let Ok(Some((name, body))) = next else { break };
                // Its own thread, so a panic fails this test alone, reported under its name.
                let passed = std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn(body)
                    .map(|thread| thread.join().is_ok())
                    .unwrap_or(false);
                println!("test {name} ... {}", if passed { "ok" } else { "FAILED" });
                if !passed {
                    if let Ok(mut failed) = failed.lock() {
                        failed.push(name);
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_default();
    let result = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {result}. {} passed; {} failed\n",
        count - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for name in failed {
            println!("    {name}");
        }
        ExitCode::from(101)
    }
}
