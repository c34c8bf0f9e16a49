//! `signet-bench`: the load generator that measures Signet, and the baseline it is measured
//! against. See `BENCHMARKS.md` at the repository root for how to run it and the figures.
//!
//! - `cli`: the command line; one subcommand per scenario, plus `baseline-server`.
//! - `scenario`: `connect`, `idle`, `echo`, `broadcast`, `command`, each written once against
//!   [`client::Client`] so it drives Signet, the baseline and the peers alike; with `--servers` they spread
//!   connections over the nodes of a cluster, and `revocation` and `replay` act on one node and
//!   observe on another.
//! - `client`: connecting like a SignalR client (negotiate, upgrade, handshake) from several
//!   loopback source addresses, with Signet's own codecs (`signet_protocol::protocol`).
//! - `credentials`: tokens and message keys minted from the server's secrets.
//! - `baseline`: the minimal actix-ws server (echo and fan-out, no protocol, no authentication).
//! - `peers`: other servers (socketioxide, Node's socket.io, aiosignalr) measured by the same
//!   scenarios in the same run (`--peer`), started as child processes like the baseline;
//!   `socketio`: the minimal Engine.IO v4 / Socket.IO v5 client that drives the Socket.IO ones.
//! - `stats`, `system`: latency histograms; file limit, memory and CPU from `/proc`.

pub mod baseline;
pub mod cli;
pub mod client;
pub mod credentials;
pub mod peers;
pub mod scenario;
pub mod socketio;
pub mod stats;
pub mod system;
