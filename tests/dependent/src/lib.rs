//! The `signet` library as an application sees it, without the `internals` feature: only the
//! documented API resolves (`src/lib.rs`, "Stability"). Its doctests are the proof: the public
//! paths compile, and each internal module is private (`compile_fail`). Its examples are
//! `examples/chat.rs` and `examples/signed.rs`, built here against that API.
//!
//! `scripts/test.sh` runs `cargo test -p signet-dependent` on its own: within `cargo test
//! --workspace` the crate's own tests enable `internals`, cargo unifies the features of the
//! whole build, and these doctests would fail.
//!
//! The public API resolves:
//!
//! ```
//! use signet::{bind, cli, protocol, settings, Application, HubBuilder, Principal, Server};
//! let _run: fn() -> std::process::ExitCode = cli::run;
//! ```
//!
//! Each internal module does not: it is private (rustc's E0603; rustdoc checks the error code
//! on nightly only, on stable any error passes, so the module names here are the real ones).
//!
//! ```compile_fail,E0603
//! use signet::auth;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::cluster;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::connection;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::envelope;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::http;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::hub;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::identity;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::metrics;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::startup;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::store;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::telemetry;
//! ```
//!
//! ```compile_fail,E0603
//! use signet::tls;
//! ```
