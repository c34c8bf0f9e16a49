//! `signet-device`: a simulated home-hub device (a door lock and a light) that connects to a
//! Signet server's `/hubs/home`, executes the signed commands it is sent and reports telemetry.
//!
//! The layers, dependencies pointing down:
//!
//! - [`cli`]: flags, the validated [`config::Config`], logging, the exit status.
//! - [`runner`]: the device's life: obtain a token, connect, run a session, reconnect with
//!   [`backoff`], until stopped or refused for good.
//! - [`session`]: one connection's `select!` loop: hub messages, keep-alive, telemetry, token
//!   renewal over the hub's `RefreshToken`, the server's Close.
//! - [`hub`]: the SignalR client connection: negotiate, WebSocket, handshake, framing,
//!   invocations. The codecs are the server's own, from `signet_protocol::protocol`.
//! - [`commands`]: verify a `Command` envelope (with `signet_protocol::envelope`), act on it,
//!   build the `CommandResult`; [`keys`] holds the message keys a command may be signed with.
//! - [`actuator`]: commands carried out one at a time, in order, across reconnections.
//! - [`device`]: the simulated hardware and its state; [`telemetry`]: what it reports.
//! - [`tls`]: HTTPS/WSS: trusted roots, `--ca-file`, the optional client certificate.
//! - [`token`]: exchanging the device id and key for an access token and message key.
//!
//! Nothing here holds a second copy of the protocol or envelope code: both come from the
//! `signet-protocol` crate the server uses too, so the device and the server cannot disagree on
//! the wire format; the device does not depend on the server crate.

pub mod actuator;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod config;
pub mod device;
pub mod hub;
pub mod keys;
pub mod runner;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod token;
