//! The `signet` binary: parses the command line and hands over to the library.

/// mimalloc instead of glibc's malloc: under connection churn glibc's per-thread arenas kept
/// the memory of closed connections (RSS grew by ~15% over a 10-minute soak and stayed), where
/// mimalloc returns freed pages to the system. See BENCHMARKS.md ("Soak").
/// (The `system-allocator` feature leaves it out, for heap profilers that intercept malloc.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    signet::cli::run()
}
