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
//!   key exchange, operator user management, audit events.
//! - `auth`: token verification (key ring pinned per key), where a request carries its token,
//!   the [`auth::Principal`] a token proves, revocation (checked on every token, published as
//!   events), message keys.
//! - `store`: persistence behind traits (users, devices, sessions, revocation records), with
//!   the embedded SQLite implementation; migrations live in `migrations/sqlite`.
//! - `settings`: typed configuration from defaults, file and environment, validated once;
//!   secrets that cannot be printed.
//! - `telemetry`: logging set-up.
//!
//! Coming with the hub issues: `transport` (WebSockets, SSE, long polling) adapts HTTP to one
//! `connection` type; `protocol` is the pure SignalR codec; `hub` dispatches invocations and
//! owns the lifetime manager; `hubs` holds the application; `envelope` is a service the layers
//! above call.

pub mod api;
pub mod auth;
pub mod cli;
pub mod http;
pub mod identity;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
