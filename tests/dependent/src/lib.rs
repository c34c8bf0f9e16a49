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
//! So do the services a hub's setup gets from its `HubContext`, which the built-in home hub is
//! built on (the device registry, envelope sealing, the backplane, metrics):
//!
//! ```
//! use signet::{
//!     random_id, unix_now_ms, Backplane, BackplaneScript, BackplaneValue, DeviceInfo, Devices,
//!     EnvelopeSealer, HubContext, HubMetrics, OpaqueError, ScriptCall, UploadStream,
//! };
//! fn _seams(context: &HubContext<'_>) -> (Devices, EnvelopeSealer, Option<Backplane>, HubMetrics) {
//!     (context.devices(), context.sealer(), context.backplane(), context.metrics())
//! }
//! let _types: Option<(DeviceInfo, BackplaneValue, OpaqueError, UploadStream)> = None;
//! let _call: Option<ScriptCall<'static>> = None;
//! let _script = BackplaneScript::new("return 1");
//! assert!(!random_id().is_empty() && unix_now_ms() > 0);
//! ```
//!
//! The error enums a server's start-up returns are non-exhaustive, so a new reason in a later
//! release does not break an application's `match` (rustc's E0004 without a wildcard arm):
//!
//! ```compile_fail,E0004
//! fn reason(err: &signet::HubRegistrationError) -> &'static str {
//!     match err {
//!         signet::HubRegistrationError::InvalidName(_) => "name",
//!         signet::HubRegistrationError::Duplicate(_) => "twice",
//!         signet::HubRegistrationError::Reserved(_) => "reserved",
//!         signet::HubRegistrationError::Upstream(_) => "upstream",
//!     }
//! }
//! ```
//!
//! ```
//! fn reason(err: &signet::HubRegistrationError) -> &'static str {
//!     match err {
//!         signet::HubRegistrationError::Duplicate(_) => "twice",
//!         _ => "other",
//!     }
//! }
//! fn startup(err: &signet::StartupError) -> String {
//!     match err {
//!         other => other.to_string(),
//!     }
//! }
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
