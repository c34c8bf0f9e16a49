//! Typed configuration, loaded once at start-up and validated before anything binds.
//!
//! Sources, later ones winning: the built-in defaults (the `Default` impls below, which are the
//! documented defaults), the TOML file, then environment variables `SIGNET__<SECTION>__<KEY>`.
//! Unknown keys are errors in every source: a typo must never be silently ignored.

mod cluster;
mod load;
mod net;
mod secrets;
mod store;
mod upstream;
mod validate;

pub use cluster::{valid_node_id, ClusterSettings, RedisUrl, MAX_NODE_ID_CHARS};
pub use load::{load, load_from_str, SettingsError};
pub use net::IpNet;
pub use secrets::{new_random_secret, write_private_file, ResolvedSecrets, Secret, SecretSource};
pub use signet_protocol::duration::parse_duration;
pub use store::{StoreSettings, StoreUrl};
pub use upstream::{DeclaredMethod, UpstreamEvent, UpstreamMethod, UpstreamSettings};
pub use validate::MIN_SECRET_BYTES;

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Every setting Signet has. Sections map one to one onto TOML tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[server]`: the listener, data directory, workers, origins, proxies.
    pub server: ServerSettings,
    /// `[log]`: format and level.
    pub log: LogSettings,
    /// `[jwt]`: the tokens Signet issues and accepts.
    pub jwt: JwtSettings,
    /// `[envelope]`: signed command envelopes.
    pub envelope: EnvelopeSettings,
    /// `[hub]`: limits of hub connections, every hub alike.
    pub hub: HubSettings,
    /// `[transports]`: which transports are offered, and their limits.
    pub transports: TransportSettings,
    /// `[identity]`: logins, refresh tokens, devices, password hashing.
    pub identity: IdentitySettings,
    /// `[home]`: the built-in home hub's limits (unused by other hubs).
    pub home: HomeSettings,
    /// `[metrics]`: the Prometheus endpoint and the console's charts.
    pub metrics: MetricsSettings,
    /// `[audit]`: where audit events go.
    pub audit: AuditSettings,
    /// `[tls]`: HTTPS and WSS.
    pub tls: TlsSettings,
    /// `[store]`: SQLite (default) or PostgreSQL.
    pub store: StoreSettings,
    /// `[cluster]`: several nodes over one Redis.
    pub cluster: ClusterSettings,
    /// `[[upstream]]` tables: hub methods forwarded to backends over HTTP.
    pub upstream: Vec<UpstreamSettings>,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on. Port 0 picks a free port (the bound address is logged).
    pub listen: SocketAddr,
    /// Directory for generated secrets and the database. Created with mode 0700 if missing.
    pub data_dir: PathBuf,
    /// HTTP worker threads. Defaults to the number of CPU cores.
    pub workers: usize,
    /// Seconds to wait for connections to finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Largest accepted HTTP request body, in bytes (JSON APIs).
    pub max_request_body_bytes: usize,
    /// Browser origins allowed to negotiate and open WebSockets (exact match, e.g.
    /// `https://app.example.com`). Requests without an `Origin` header are always allowed.
    pub allowed_origins: Vec<String>,
    /// Also allow a browser origin whose host and port equal the request's `Host` (the
    /// console Signet serves). See the README for its DNS-rebinding caveat.
    pub allow_same_origin: bool,
    /// Reverse proxies (addresses or networks) whose forwarding header names the client.
    /// Empty: the socket's peer is the client and forwarding headers are ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Which header a trusted proxy writes: `x-forwarded-for` or `forwarded` (RFC 7239).
    pub forwarded_header: ForwardedHeader,
    /// How long `/readyz` waits for each dependency (the store) before calling it failing.
    pub readiness_timeout_secs: u64,
}

/// The header a trusted proxy names the client in. Only one is read, so a client cannot slip
/// in the other one past a proxy that passes it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`: the last address before the trusted proxies.
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): its `for=` parameters.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            shutdown_timeout_secs: 10,
            max_request_body_bytes: 16 * 1024,
            allowed_origins: Vec::new(),
            allow_same_origin: true,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            readiness_timeout_secs: 2,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// A second listener serving only `/metrics`, without authentication (bind it to an
    /// internal interface). Unset: `/metrics` is on the main listener, for admins only.
    pub listen: Option<SocketAddr>,
    /// Seconds between the samples the admin console charts.
    pub chart_interval_secs: u64,
    /// Seconds of history the admin console charts.
    pub chart_window_secs: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: None,
            chart_interval_secs: 5,
            chart_window_secs: 600,
        }
    }
}

/// Where audit events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutput {
    /// JSON lines on the log stream (standard output), beside the other log lines.
    Log,
    /// JSON lines in `audit.file`, rotated by size.
    File,
}

/// `[audit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// `log` or `file`.
    pub output: AuditOutput,
    /// The audit file with `output = "file"`; unset: `audit.log` in the data directory.
    pub file: Option<PathBuf>,
    /// The file is rotated (`audit.log.1`, `.2`, ...) before it grows past this size.
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one; older ones are deleted.
    pub max_files: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            output: AuditOutput::Log,
            file: None,
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

impl AuditSettings {
    /// The audit file, resolved against the data directory.
    pub fn file_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.file
            .clone()
            .unwrap_or_else(|| data_dir.join("audit.log"))
    }
}

pub use signet_protocol::logging::LogFormat;

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `signet=debug,actix_web=info`. `RUST_LOG` wins if set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// `[jwt]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// `iss` of tokens Signet issues, and required on tokens signed with Signet's secrets.
    pub issuer: String,
    /// `aud` of tokens Signet issues, and required on tokens signed with Signet's secrets.
    pub audience: String,
    /// Lifetime of access tokens Signet issues, 5 to 1440 minutes.
    pub access_token_lifetime_minutes: u64,
    /// Lifetime of refresh tokens, 1 to 365 days.
    pub refresh_token_lifetime_days: u64,
    /// Clock leeway applied to `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Algorithm used to sign the tokens Signet issues: `HS256`, `HS384` or `HS512`.
    pub algorithm: HmacAlgorithm,
    /// The current signing secret. Only from `SIGNET__JWT__SECRET`: a value in the file is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// A file holding the current signing secret (used when `SIGNET__JWT__SECRET` is unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Files holding previous secrets: tokens they signed keep verifying until they expire.
    pub previous_secret_files: Vec<PathBuf>,
    /// Public keys of external identity providers, each pinned to one algorithm.
    pub external: Vec<ExternalIssuer>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            issuer: "signet".into(),
            audience: "signet".into(),
            access_token_lifetime_minutes: 15,
            refresh_token_lifetime_days: 30,
            leeway_secs: 0,
            algorithm: HmacAlgorithm::HS256,
            secret: None,
            secret_file: None,
            previous_secret_files: Vec::new(),
            external: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
/// The HMAC algorithm of the tokens Signet signs.
pub enum HmacAlgorithm {
    /// HMAC-SHA256.
    HS256,
    /// HMAC-SHA384.
    HS384,
    /// HMAC-SHA512.
    HS512,
}

/// An external identity provider whose tokens Signet accepts.
///
/// Either `pem_file` with `algorithm` and `kid`, or `jwks_file` (each key's `alg` is taken from
/// the JWK and pinned). Its tokens must carry this `issuer` and `audience`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuer {
    /// The `iss` its tokens must carry.
    pub issuer: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// With `pem_file`: the `kid` its tokens name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// With `pem_file`: the one algorithm its key verifies (`RS256`, `ES256`, `EdDSA`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// A PEM public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem_file: Option<PathBuf>,
    /// A JWKS file (each key pinned to its `alg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
}

/// `[envelope]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeSettings {
    /// The envelope master key. Only from `SIGNET__ENVELOPE__SECRET`: a value in the file is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// A file holding the envelope master key (used when `SIGNET__ENVELOPE__SECRET` is unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Longest accepted `expiry - issuedAt`, in seconds.
    pub max_lifetime_secs: u64,
    /// Clock disagreement tolerated with senders, in seconds (both directions).
    pub clock_skew_secs: u64,
    /// Longest signed `message`, in bytes.
    pub max_message_bytes: usize,
    /// Nonces remembered at once; when full, new envelopes are refused (fail closed) until
    /// old nonces expire.
    pub nonce_capacity: u64,
    /// Unexpired nonces one login session may hold in the store; beyond it its envelopes are
    /// refused (`nonce_quota_exceeded`) until its own nonces expire, so one user sending as
    /// fast as it can never fills the store for everyone else.
    pub max_nonces_per_session: u64,
    /// Lifetime of the envelopes the server signs when it forwards a command to a device.
    pub forward_lifetime_secs: u64,
}

impl Default for EnvelopeSettings {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            max_lifetime_secs: 60,
            clock_skew_secs: 5,
            max_message_bytes: 16 * 1024,
            nonce_capacity: 1_000_000,
            max_nonces_per_session: 10_000,
            forward_lifetime_secs: 30,
        }
    }
}

/// Limits and timings of hub connections, whatever the transport.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSettings {
    /// Send a Ping when nothing else was sent for this long.
    pub keep_alive_interval_secs: u64,
    /// Close a connection that sent nothing (not even a Ping) for this long. Also how long a
    /// peer may leave sent data unacknowledged (it stopped reading) before its socket is dropped.
    pub client_timeout_secs: u64,
    /// Close a connection whose handshake has not arrived after this long.
    pub handshake_timeout_secs: u64,
    /// Largest incoming hub message, in bytes; a larger one closes the connection with an error.
    pub max_message_bytes: usize,
    /// Invocations one client may have running at once; more wait (the connection stops reading).
    pub max_parallel_invocations: usize,
    /// Server-to-client and client-to-server streams one connection may have open at once.
    pub max_streams_per_connection: usize,
    /// Items of one client-to-server stream buffered for the method reading it; when it is
    /// full the session waits (that client's other messages wait too), like ASP.NET Core's
    /// `StreamBufferCapacity`.
    pub stream_buffer_items: usize,
    /// Messages queued for one connection; a connection whose queue is full when a broadcast
    /// or another client's send reaches it is disconnected (it never slows the others).
    pub outbound_queue_messages: usize,
    /// Connections the server holds at once (negotiated or connected); more get 503.
    pub max_connections: usize,
    /// Connections one principal (user or device, by `sub`) may hold at once, negotiated or
    /// connected; beyond it negotiate answers 429 `too_many_user_connections` to that principal only.
    pub max_connections_per_user: usize,
    /// Groups one connection may belong to.
    pub max_groups_per_connection: usize,
    /// A negotiated connection that no transport picks up within this many seconds is dropped.
    pub negotiate_timeout_secs: u64,
    /// Close a connection when its token expires (plus `jwt.leeway_secs`), on every transport.
    /// Turning this off keeps connections open past expiry, as ASP.NET Core does by default.
    pub close_on_expiry: bool,
    /// Append exception details to invocation errors, like ASP.NET Core's
    /// `EnableDetailedErrors`. Off by default: error texts then never reveal internals.
    pub detailed_errors: bool,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            keep_alive_interval_secs: 15,
            client_timeout_secs: 30,
            handshake_timeout_secs: 15,
            max_message_bytes: 32 * 1024,
            max_parallel_invocations: 1,
            max_streams_per_connection: 16,
            stream_buffer_items: 16,
            outbound_queue_messages: 1024,
            max_connections: 100_000,
            max_connections_per_user: 100,
            max_groups_per_connection: 64,
            negotiate_timeout_secs: 15,
            close_on_expiry: true,
            detailed_errors: false,
        }
    }
}

/// Which transports clients may use, and the timings of the HTTP ones and of stateful reconnect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSettings {
    /// Offer WebSockets in negotiate and accept WebSocket requests.
    pub websockets: bool,
    /// Offer Server-Sent Events (text only: JSON protocol).
    pub server_sent_events: bool,
    /// Offer long polling (JSON and MessagePack).
    pub long_polling: bool,
    /// How long a poll waits for messages before answering 200 with an empty body. Keep it
    /// under the clients' HTTP timeout (100 s in the official clients).
    pub poll_timeout_secs: u64,
    /// A long-polling connection with no poll for this long, or a WebSocket with stateful
    /// reconnect that has not reconnected for this long, is removed.
    pub disconnect_timeout_secs: u64,
    /// Grant stateful reconnect to clients that ask for it (`withStatefulReconnect()`).
    pub stateful_reconnect: bool,
    /// Bytes of sent but unacknowledged messages kept per connection for replay after a
    /// reconnect; when full, sending pauses until the client acknowledges.
    pub stateful_reconnect_buffer_bytes: usize,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            websockets: true,
            server_sent_events: true,
            long_polling: true,
            poll_timeout_secs: 90,
            disconnect_timeout_secs: 15,
            stateful_reconnect: true,
            stateful_reconnect_buffer_bytes: 100_000,
        }
    }
}

/// Users, devices, sessions: login throttling, password hashing cost and per-user limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// Failed logins allowed per (username, client address) within
    /// `login_failure_window_secs`; once reached, that name from that address answers 429
    /// until the window ends. Other names from the address are not affected.
    pub login_max_failures: u32,
    /// Failed logins allowed per client address (IPv6: per /64), whatever the names, within
    /// the same window; once reached, every login from the address answers 429.
    pub login_max_failures_per_address: u32,
    /// Length of the failed-login windows, in seconds.
    pub login_failure_window_secs: u64,
    /// Failed logins of one username, from any address, before each further attempt must
    /// wait a delay doubling from 1 s (a success, or a quiet window, resets it).
    pub login_backoff_after_failures: u32,
    /// Longest delay of that backoff, in seconds.
    pub login_max_backoff_secs: u64,
    /// Keys tracked at once in each of the three throttling tables (memory bound).
    pub login_limiter_capacity: u64,
    /// Password hashes computed at once (each takes `password_hash_memory_kib`). Defaults to
    /// the number of CPU cores.
    pub max_concurrent_password_hashes: usize,
    /// How long a login waits for a free hashing slot before it is answered 503.
    pub password_hash_wait_ms: u64,
    /// Argon2id memory cost in KiB. The default (19 MiB, 2 passes, 1 lane) is OWASP's
    /// recommended minimum; lower it only for tests.
    pub password_hash_memory_kib: u32,
    /// Argon2id passes over memory.
    pub password_hash_iterations: u32,
    /// Argon2id lanes.
    pub password_hash_parallelism: u32,
    /// Devices one user may own.
    pub max_devices_per_user: u32,
    /// Live login sessions per user; a new login beyond it revokes the oldest.
    pub max_sessions_per_user: u32,
    /// Revocation events buffered for a slow subscriber (the hub) before it must resync.
    pub revocation_event_capacity: usize,
    /// How many times the message key of one message session of an external identity
    /// provider's token can be claimed at `GET /api/auth/message-key`; 0 turns claims off.
    pub message_key_claims_max: u32,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            login_max_failures: 5,
            login_max_failures_per_address: 100,
            login_failure_window_secs: 60,
            login_backoff_after_failures: 10,
            login_max_backoff_secs: 60,
            login_limiter_capacity: 100_000,
            max_concurrent_password_hashes: std::thread::available_parallelism()
                .map_or(2, usize::from),
            password_hash_wait_ms: 500,
            password_hash_memory_kib: 19 * 1024,
            password_hash_iterations: 2,
            password_hash_parallelism: 1,
            max_devices_per_user: 50,
            max_sessions_per_user: 20,
            revocation_event_capacity: 1024,
            message_key_claims_max: 1,
        }
    }
}

/// The home hub: device commands and telemetry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeSettings {
    /// Commands awaiting their device's result, at most; beyond it new commands are refused.
    pub max_pending_commands: u64,
    /// Commands one user may have awaiting results at once (counted exactly); beyond it that
    /// user's `SendCommand` is refused while everyone else's still goes through.
    pub max_pending_commands_per_user: u64,
    /// A command whose device has not answered after this many seconds is forgotten (its late
    /// result is refused).
    pub command_timeout_secs: u64,
    /// Telemetry events buffered for `StreamTelemetry` subscribers; a subscriber that falls
    /// further behind skips the oldest.
    pub telemetry_buffer: usize,
}

impl Default for HomeSettings {
    fn default() -> Self {
        Self {
            max_pending_commands: 100_000,
            max_pending_commands_per_user: 1_000,
            command_timeout_secs: 60,
            telemetry_buffer: 1024,
        }
    }
}

/// HTTPS and WSS. With `cert_file` and `key_file` set the listener speaks only TLS (1.2 and 1.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The certificate chain, PEM, leaf first (a Let's Encrypt `fullchain.pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key of the leaf certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// CA certificates, PEM. When set, every client must present a certificate issued by one
    /// of them (mutual TLS); hub and API requests still need their token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// How often the certificate and key files are checked for changes, in seconds. SIGHUP
    /// checks at once.
    pub reload_interval_secs: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval_secs: 30,
        }
    }
}

impl TlsSettings {
    /// Whether the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}
