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
//! - `console`: the browser console at `/`, static files compiled into the binary with their
//!   security headers; it is a client of the API and hub like any other.
//! - `demo`: `signet demo`, the server with demo users and simulated devices for a first look.
//! - `telemetry`: logging set-up; `audit`: audit events as JSON lines (log stream or rotated
//!   file); `metrics`: the Prometheus registry the layers count into, with bounded labels.
//! - `tls`: HTTPS/WSS with rustls, the certificate reloaded when its files change.
//!
//! - `transport`: negotiate and the three transports (WebSockets, Server-Sent Events, long
//!   polling with `POST` sends) adapt HTTP to one `connection` type.
//! - `connection`: the connection whatever the transport: principal, bounded queues both ways,
//!   attachments of transports, the stateful-reconnect replay buffer, its supervisor.
//!
//! Coming with the hub issues: `hub` dispatches invocations and
//! owns the lifetime manager; `hubs` holds the application; `store` is a service the
//! layers above call.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod connection;
pub mod console;
pub mod demo;
pub mod envelope;
pub mod http;
pub mod hub;
pub mod hubs;
pub mod identity;
pub mod metrics;
pub mod protocol;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod transport;
