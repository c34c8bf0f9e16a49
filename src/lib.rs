//! Signet: a SignalR-compatible, authenticated real-time hub server.
//!
//! The layers, dependencies pointing down:
//!
//! - `startup`: builds the [`startup::AppState`] of shared services and binds the HTTP server;
//!   `cli` and the integration tests both go through [`startup::Application::build`].
//! - `api`: the REST API under `/api`: thin handlers over the identity service.
//! - `http`: plumbing every route shares: the JSON error type and body extractor, redacting
//!   request logs, health.
//! - `identity`: Signet as its own token issuer: logins and refresh rotation, devices and their
//!   key exchange, message keys (through `envelope`), operator user management, audit events.
//! - `auth`: token verification (key ring pinned per key), where a request carries its token,
//!   the [`auth::Principal`] a token proves, revocation (checked on every token, published as
//!   events for live connections).
//! - `store`: persistence behind traits (users, devices, sessions, revocation records), with
//!   the embedded SQLite implementation; migrations live in `migrations/sqlite`.
//! - `settings`: typed configuration from defaults, file and environment, validated once;
//!   secrets that cannot be printed.
//! - `envelope`: signed command envelopes (format, verification, nonce store); a service the
//!   hub calls, never calling up.
//! - `protocol`: the SignalR hub protocols (JSON, MessagePack) and handshake; pure, no I/O.
//! - `telemetry`: logging set-up.
//!
//! Coming with the hub issues: `transport` (WebSockets, SSE, long polling) adapts HTTP to one
//! `connection` type; `hub` dispatches invocations and owns the lifetime manager; `hubs` holds
//! the application.

pub mod api;
pub mod auth;
pub mod cli;
pub mod connection;
pub mod envelope;
pub mod http;
pub mod hub;
pub mod hubs;
pub mod identity;
pub mod protocol;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod transport;
