//! Signet's wire formats, shared by the server (`signet`), the simulated device
//! (`signet-device`) and the load generator (`signet-bench`). No I/O and no server state, so a
//! client does not pull in the server's database, password hashing or HTTP server.
//!
//! - [`protocol`]: the SignalR hub protocols (JSON, MessagePack), the handshake, the hub
//!   message model; bytes in, messages out and back.
//! - [`envelope`]: signed command envelopes: message keys, the format, signing, verification
//!   replay detection (the nonce store trait and its bounded in-memory store).
//! - [`token`]: the claims of the access tokens Signet issues and the `kid` of an HMAC secret.
//! - [`secret`]: a secret that cannot be printed.
//! - [`duration`]: the one parser of durations such as `250ms`, `30s`, `15m`.
//! - `logging` (feature `logging`): the `tracing` set-up every Signet program shares.

pub mod duration;
pub mod envelope;
#[cfg(feature = "logging")]
pub mod logging;
pub mod protocol;
pub mod secret;
pub mod token;
