//! Signet: a SignalR-compatible, authenticated real-time hub server, usable as the `signet`
//! binary (`signet serve`: the built-in home hub) or as a library that serves an application's
//! own hubs.
//!
//! # Bring your own hub
//!
//! An application declares its hubs on a [`Server`]: the server makes each hub's lifetime
//! manager (in-process, or over Redis with `[cluster]`) and hands the application a
//! [`HubBuilder`] to declare its methods on, with their parameters, roles and envelope policy.
//! Everything else is Signet's, configured as for `signet serve`: token verification and
//! revocation, the three transports, the identity API (logins, devices, message keys), the
//! publish API for backends, `[[upstream]]` methods, the console's files, metrics, health, TLS
//! and clustering.
//!
//! ```no_run
//! use signet::{bind, HubBuilder, MethodSpec, Param, Server};
//!
//! fn chat(hub: HubBuilder) -> HubBuilder {
//!     hub.method(
//!         MethodSpec::new("Send", &[Param::String]),
//!         |call, args| async move {
//!             let (text,): (String,) = bind(args)?;
//!             let from = call.principal.sub.clone();
//!             call.clients
//!                 .all("Message", vec![from.into(), text.into()])
//!                 .await
//!                 .map_err(signet::HubError::internal)?;
//!             Ok(None)
//!         },
//!     )
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let settings = signet::settings::load(None, std::env::vars())?;
//!     signet::init_logging(&settings)?;
//!     Server::new(settings).hub("chat", chat).run()?;
//!     Ok(())
//! }
//! ```
//!
//! `examples/chat.rs` (groups, sends to everyone, a room, a user) and `examples/signed.rs` (a
//! method whose signed envelope the server verifies before it runs) are complete programs.
//!
//! # Stability
//!
//! The stable API, kept across minor versions once the crate reaches 1.0 (until then, across
//! patch versions): the items documented here at the crate root ([`Server`], [`Application`],
//! [`HubBuilder`], [`HubContext`], [`MethodSpec`], [`Param`], [`Access`], [`Call`],
//! [`Clients`], [`HubError`], [`MethodResult`], [`UploadStream`], [`bind`], [`Principal`],
//! [`LifetimeError`], [`ConnectedUser`], [`ConnectionInfo`], [`init_logging`], ...), the
//! [`settings`] module (the configuration and how it is loaded) and the [`protocol`] module
//! (the SignalR hub protocols, re-exported from `signet-protocol`).
//!
//! [`cli::run`] is the `signet` command itself (`signet serve`, `user add`, `apikey create`,
//! ...), public for an application whose binary is that command with its own allocator or
//! set-up around it; the `signet` binary's `main` only calls it.
//!
//! Everything else is private. The internal modules (`auth`, `connection`, `hub`, `store`,
//! `cluster`, ...) are public, hidden from these docs, only with the `internals` feature,
//! which exists for this crate's own integration tests, benchmarks and fuzz targets (the
//! tests get it through a dev-dependency of the package on itself): it is **not** stable API,
//! its paths change without notice, and an application should not enable it.
//!
//! # Layout
//!
//! The layers, dependencies pointing down (nothing imports `startup`):
//!
//! - `startup`: [`Server`] (an application's hubs on the server) builds the shared services
//!   once (`AppState`, which stays there), registers for each layer the narrow handle it
//!   needs (the transports' `HubEndpoints`, the API's `IdentityService`, health's readiness,
//!   ...) and binds the HTTP server (actix-web's `App` on actix-http's service, run by
//!   actix-server, with the WebSocket upgrade hook); `cli`, `demo` and the integration tests go
//!   through [`Application::build`] (the home hub's server) or [`Server::build`].
//! - `transport`: negotiate and the three transports (WebSockets, Server-Sent Events, long
//!   polling with `POST` sends), and in-band refresh: they adapt HTTP to one `connection`. A
//!   WebSocket is answered through the application like any request, then its raw socket is
//!   the transport's: frames read and written on the stream, no HTTP buffers kept.
//! - `api`: the REST API under `/api`: thin handlers over the identity service, and the
//!   publish API (`/api/hubs/{hub}/...`) through which backends reach a hub's clients via its
//!   lifetime manager, with API keys or a `signet:server` token.
//! - `console`: the browser console at `/`, static files compiled into the binary with their
//!   security headers; it is a client of the API and hub like any other.
//! - `http`: plumbing every route shares: the JSON error type (and the HTTP answers of other
//!   layers' request errors), the body extractor, redacting request logs, health, `/metrics`.
//! - `hubs`: the applications' hubs: what a hub's setup gets ([`HubContext`]), the catalog
//!   of the hubs a [`Server`] registers (each with its lifetime manager, plus the methods
//!   `[[upstream]]` forwards to a backend), and the built-in home hub `signet serve` registers
//!   (devices, signed commands, admin methods).
//! - `upstream`: upstream calls: a hub method (or connection event) POSTed to a backend as
//!   signed JSON with the caller's principal, its answer the completion (bounded in time,
//!   size and calls in flight).
//! - `hub`: the dispatcher (method table with role gates and envelope policy, invocations,
//!   streams, the hub session) and the lifetime manager behind which sends, presence and kicks
//!   go: a seam toward other nodes that speaks data, never connection handles.
//! - `connection`: the connection whatever the transport: principal, bounded queues both ways,
//!   attachments of transports, the stateful-reconnect replay buffer, its supervisor, close
//!   reasons (with their exhaustive metrics index), in-band refresh (one for the HTTP endpoint
//!   and the hub method).
//! - `identity`: Signet as its own token issuer: logins and refresh rotation, devices and their
//!   key exchange, message keys (through `envelope`), operator user management.
//!
//! Services the layers above call, never calling back up:
//!
//! - `auth`: token verification (key ring pinned per key), where a request carries its token
//!   and the one way a request is authenticated, under an explicit token policy (its refusals
//!   are `auth` errors; `http` maps them to responses), the [`Principal`]
//!   a token proves, revocation (checked on every token, published as events for live
//!   connections).
//! - `envelope`: signed command envelopes: the server's `EnvelopeService` (keys
//!   from the master secret, `open`, `seal`) over `signet-protocol`'s format, verification and
//!   nonce store, re-exported here.
//! - `store`: persistence behind traits (users, devices, sessions, revocation records), with
//!   two backends over one copy of the SQL: embedded SQLite (default) and PostgreSQL
//!   (`[store] url`, shared by several nodes); migrations in `migrations/{sqlite,postgres}`.
//! - `cluster`: several nodes over one Redis (`[cluster] redis_url`): the node's id and its
//!   two Redis connections, the backplane's versioned wire format, and the Redis lifetime
//!   manager that wraps the in-process one (sends, groups, presence, kicks across nodes).
//! - `metrics`: the Prometheus registry the layers count into, with bounded labels.
//! - `protocol`: the SignalR hub protocols (JSON, MessagePack) and handshake; pure, no I/O.
//!   A re-export of `signet-protocol`'s (`crates/signet-protocol`), the crate the server shares
//!   with `signet-device` and `signet-bench`: hub protocols, envelopes, access-token claims, the
//!   unprintable `Secret`, the duration parser, the logging set-up. The clients depend on it,
//!   never on this crate.
//! - `settings`: typed configuration from defaults, file and environment, validated once;
//!   secrets that cannot be printed.
//! - `telemetry`: logging set-up; `audit`: audit events as JSON lines (log stream or rotated
//!   file); `tls`: HTTPS/WSS with rustls, the certificate reloaded when its files change.
//! - `cli` (the `signet` command) and `demo` (`signet demo`, the server with demo users and
//!   simulated devices) sit on top, beside `startup`.

#![warn(missing_docs)]

// The stable API: documented, re-exported here.
pub mod cli;
pub mod protocol;
pub mod settings;

pub use auth::Principal;
pub use hub::{
    bind, Access, BackplaneError, Call, Clients, ConnectedUser, ConnectionInfo, HubBuilder,
    HubError, InternalError, LifetimeError, MethodResult, MethodSpec, Param, UploadStream,
};
pub use hubs::{HubContext, HubRegistrationError};
pub use startup::{Application, Server, StartupError};
pub use telemetry::init_logging;

// Internal modules: private, so a dependent sees only the API above. The `internals` feature
// (Cargo.toml) makes them public, hidden from the docs and not stable API, for this crate's own
// integration tests, benchmarks and fuzz targets. A `cfg` pair per module, not a macro: rustfmt
// does not see modules declared inside a macro.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod auth;
#[cfg(not(feature = "internals"))]
mod auth;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod cluster;
#[cfg(not(feature = "internals"))]
mod cluster;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod connection;
#[cfg(not(feature = "internals"))]
mod connection;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod envelope;
#[cfg(not(feature = "internals"))]
mod envelope;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod http;
#[cfg(not(feature = "internals"))]
mod http;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod hub;
#[cfg(not(feature = "internals"))]
mod hub;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod identity;
#[cfg(not(feature = "internals"))]
mod identity;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod metrics;
#[cfg(not(feature = "internals"))]
mod metrics;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod startup;
#[cfg(not(feature = "internals"))]
mod startup;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod store;
#[cfg(not(feature = "internals"))]
mod store;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod telemetry;
#[cfg(not(feature = "internals"))]
mod telemetry;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod tls;
#[cfg(not(feature = "internals"))]
mod tls;

/// The README's Rust code ("Bring your own hub") compiles: `cargo test --doc` checks it.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

// Private whatever the features: nothing outside the crate needs them.
mod api;
mod audit;
mod console;
mod demo;
mod hubs;
mod transport;
mod upstream;
