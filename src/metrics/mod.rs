//! Prometheus metrics: one [`Metrics`] per server, its families typed with bounded labels.
//!
//! Every label value comes from a closed set: hub names (configured), transport and protocol
//! names, close reasons, error codes, the declared hub methods (anything else is `other`).
//! Never a user id, a token or a connection id, so the number of series stays bounded whatever
//! clients do. Gauges of live state (connections, queue depth, the process) are computed on
//! each scrape by collectors rather than kept in step by hand.
//!
//! The layers record through the narrow methods below; `Metrics` is cheap to clone and a
//! detached instance ([`Metrics::default`]) counts without being exposed.

mod process;
mod series;
mod store;

pub use series::StatsSeries;
pub use store::MeteredStore;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label of a method that is not declared on its hub.
pub const OTHER_METHOD: &str = "other";

/// Live connections as the registry sees them at scrape time.
#[derive(Debug, Default)]
pub struct Census {
    /// Connections by `(hub, transport, protocol)`; `none` before a transport or handshake.
    pub connections: HashMap<(String, &'static str, &'static str), i64>,
    /// The fullest outbound queue, in frames.
    pub max_queue_depth: usize,
}

/// Implemented by the connection registry, read on every scrape.
pub trait ConnectionCensus: Send + Sync {
    fn census(&self) -> Census;
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The method ran and returned a result (or completed its stream).
    Ok,
    /// The method ran and failed.
    Error,
    /// The caller lacks the role the method requires.
    Refused,
    /// The method is signed and the envelope did not verify.
    EnvelopeRejected,
    /// Never dispatched: unknown method, wrong arguments, a stream or id rule broken.
    Invalid,
}

impl Outcome {
    fn code(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Refused => "refused",
            Self::EnvelopeRejected => "envelope_rejected",
            Self::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HubLabels {
    hub: String,
    transport: &'static str,
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    hub: String,
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    hub: String,
    method: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamEventLabels {
    hub: String,
    event: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    hub: String,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 9))
}

/// Running totals for the console's charts (the sum over every label).
#[derive(Debug, Default)]
struct Totals {
    messages: AtomicU64,
    invocations: AtomicU64,
    envelope_rejections: AtomicU64,
}

/// Outbound counters of one connection, resolved once when its handshake names the protocol.
#[derive(Debug, Clone)]
pub struct Traffic {
    messages: Counter,
    bytes: Counter,
    totals: Arc<Inner>,
}

impl Traffic {
    /// A frame queued for the client.
    pub fn record(&self, bytes: usize) {
        self.messages.inc();
        self.bytes.inc_by(bytes as u64);
        self.totals.totals.messages.fetch_add(1, Ordering::Relaxed);
    }
}

struct Inner {
    registry: Registry,
    connects: Family<HubLabels, Counter>,
    closes: Family<ReasonLabel, Counter>,
    handshake_failures: Family<ReasonLabel, Counter>,
    messages_in: Family<TrafficLabels, Counter>,
    bytes_in: Family<TrafficLabels, Counter>,
    messages_out: Family<TrafficLabels, Counter>,
    bytes_out: Family<TrafficLabels, Counter>,
    invocations: Family<InvocationLabels, Counter>,
    invocation_seconds: HistogramFamily<MethodLabels>,
    upstream_calls: Family<InvocationLabels, Counter>,
    upstream_events: Family<UpstreamEventLabels, Counter>,
    envelope_rejections: Family<CodeLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    token_refreshes: Family<RefreshLabels, Counter>,
    revocations: Family<KindLabel, Counter>,
    revocation_closes: Counter,
    slow_consumers: Counter,
    logins: Family<OutcomeLabel, Counter>,
    rate_limited: Family<LimitLabel, Counter>,
    forwarded: Family<KindLabel, Counter>,
    forward_failures: Family<KindLabel, Counter>,
    store_seconds: HistogramFamily<OperationLabel>,
    store_errors: Family<OperationLabel, Counter>,
    publish_calls: Family<PublishLabels, Counter>,
    census: Arc<OnceLock<Arc<dyn ConnectionCensus>>>,
    sampled: Arc<Mutex<Vec<SampledGauge>>>,
    totals: Totals,
}

/// A gauge read from elsewhere on each scrape: `(name, help, read)`.
type SampledGauge = (
    &'static str,
    &'static str,
    Arc<dyn Fn() -> i64 + Send + Sync>,
);

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The server's metrics. Clones share the same series.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        macro_rules! family {
            ($name:literal, $help:literal) => {{
                let family = Family::default();
                registry.register($name, $help, family.clone());
                family
            }};
        }
        macro_rules! histograms {
            ($name:literal, $help:literal) => {{
                let family: HistogramFamily<_> =
                    Family::new_with_constructor(latency_histogram as fn() -> Histogram);
                registry.register($name, $help, family.clone());
                family
            }};
        }
        let connects = family!(
            "signet_connects",
            "Connections whose handshake succeeded, by hub, transport and protocol."
        );
        let closes: Family<ReasonLabel, Counter> = family!(
            "signet_connections_closed",
            "Connections closed, by reason."
        );
        let handshake_failures = family!(
            "signet_handshake_failures",
            "Connections that ended before their handshake completed, by reason."
        );
        let messages_in = family!(
            "signet_messages_received",
            "Hub messages received from clients, by hub and protocol."
        );
        let bytes_in = family!(
            "signet_received_bytes",
            "Bytes of hub messages received from clients, by hub and protocol."
        );
        let messages_out = family!(
            "signet_messages_sent",
            "Frames queued for clients (one or more hub messages each), by hub and protocol."
        );
        let bytes_out = family!(
            "signet_sent_bytes",
            "Bytes queued for clients, by hub and protocol."
        );
        let invocations = family!(
            "signet_invocations",
            "Hub invocations by hub, method and outcome (ok, error, refused, envelope_rejected, invalid)."
        );
        let invocation_seconds = histograms!(
            "signet_invocation_duration_seconds",
            "Time a hub method ran, by hub and method."
        );
        let upstream_calls = family!(
            "signet_upstream_calls",
            "Hub calls forwarded to an upstream backend, by hub, method and outcome (ok, error, timeout, http_error, oversize, invalid, unreachable, busy)."
        );
        let upstream_events = family!(
            "signet_upstream_events",
            "Connection events posted to an upstream backend, by hub, event and outcome."
        );
        let envelope_rejections = family!(
            "signet_envelope_rejections",
            "Signed command envelopes rejected, by code."
        );
        let auth_failures = family!(
            "signet_auth_failures",
            "Requests and connections refused for their token, by reason."
        );
        let token_refreshes = family!(
            "signet_token_refreshes",
            "Token refreshes: kind `session` (refresh token rotation) or `connection` (a live connection's token), by outcome."
        );
        let revocations = family!(
            "signet_revocations_applied",
            "Revocation events applied to live connections, by kind."
        );
        let revocation_closes = Counter::default();
        registry.register(
            "signet_revocation_closed_connections",
            "Live connections closed because their token was revoked.",
            revocation_closes.clone(),
        );
        let slow_consumers = Counter::default();
        registry.register(
            "signet_slow_consumers",
            "Connections closed because their outbound queue was full.",
            slow_consumers.clone(),
        );
        let logins = family!("signet_logins", "Password logins, by outcome.");
        let rate_limited: Family<LimitLabel, Counter> = family!(
            "signet_rate_limited",
            "Requests refused by a rate limit or cap, by limit."
        );
        let _ = rate_limited.get_or_create(&LimitLabel { limit: "login" });
        let forwarded = family!(
            "signet_cluster_forwarded_requests",
            "Requests on a connection another node holds that this node forwarded to it, by kind (adopt, poll, send, delete, refresh, tunnel)."
        );
        let forward_failures = family!(
            "signet_cluster_forward_failures",
            "Forwarded requests that got no answer (owner gone, Redis down, timeout), by kind."
        );
        let store_seconds = histograms!(
            "signet_store_query_duration_seconds",
            "Store (database) operation latency, by operation."
        );
        let store_errors = family!(
            "signet_store_errors",
            "Store (database) operations that failed, by operation."
        );
        let publish_calls = family!(
            "signet_publish_api_calls",
            "Publish API calls (`/api/hubs/...`), by action (send, groups, disconnect, presence) and outcome (ok, unauthorized, forbidden, invalid, not_found, unavailable, error)."
        );
        let census: Arc<OnceLock<Arc<dyn ConnectionCensus>>> = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(ConnectionCollector(census.clone())));
        registry.register_collector(Box::new(process::ProcessCollector));
        let sampled: Arc<Mutex<Vec<SampledGauge>>> = Arc::default();
        registry.register_collector(Box::new(SampledCollector(sampled.clone())));
        Self(Arc::new(Inner {
            registry,
            connects,
            closes,
            handshake_failures,
            messages_in,
            bytes_in,
            messages_out,
            bytes_out,
            invocations,
            invocation_seconds,
            upstream_calls,
            upstream_events,
            envelope_rejections,
            auth_failures,
            token_refreshes,
            revocations,
            revocation_closes,
            slow_consumers,
            logins,
            rate_limited,
            forwarded,
            forward_failures,
            store_seconds,
            store_errors,
            publish_calls,
            census,
            sampled,
            totals: Totals::default(),
        }))
    }

    /// Where the connection gauges come from; set once at start-up.
    pub fn watch_connections(&self, census: Arc<dyn ConnectionCensus>) {
        let _ = self.0.census.set(census);
    }

    /// A gauge whose value `read` gives on each scrape (state another layer keeps).
    pub fn watch_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        if let Ok(mut sampled) = self.0.sampled.lock() {
            sampled.push((name, help, Arc::new(read)));
        }
    }

    /// The exposition, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.0.registry)
        {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }

    pub fn connected(&self, hub: &str, transport: &'static str, protocol: &'static str) {
        self.0
            .connects
            .get_or_create(&HubLabels {
                hub: hub.to_string(),
                transport,
                protocol,
            })
            .inc();
    }

    /// Creates the close counters of `codes` at zero, so that a dashboard sees every reason
    /// before the first close of each (the connection layer names them: metrics does not
    /// import it).
    pub fn expect_close_reasons(&self, codes: &[&'static str]) {
        for &reason in codes {
            let _ = self.0.closes.get_or_create(&ReasonLabel { reason });
        }
    }

    /// A connection ended with the close reason `code`.
    pub fn closed(&self, code: &'static str) {
        self.0
            .closes
            .get_or_create(&ReasonLabel { reason: code })
            .inc();
    }

    /// A connection was closed because its outbound queue was full (besides its [`Self::closed`]).
    pub fn slow_consumer(&self) {
        self.0.slow_consumers.inc();
    }

    pub fn handshake_failed(&self, code: &'static str) {
        self.0
            .handshake_failures
            .get_or_create(&ReasonLabel { reason: code })
            .inc();
    }

    /// The inbound counters of a session: `(messages, bytes)`.
    pub fn inbound(&self, hub: &str, protocol: &'static str) -> (Counter, Counter) {
        let labels = TrafficLabels {
            hub: hub.to_string(),
            protocol,
        };
        (
            self.0.messages_in.get_or_create_owned(&labels),
            self.0.bytes_in.get_or_create_owned(&labels),
        )
    }

    /// A message received from a client (for the console's message rate).
    pub fn message_received(&self) {
        self.0.totals.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// The outbound counters of a connection.
    pub fn outbound(&self, hub: &str, protocol: &'static str) -> Traffic {
        let labels = TrafficLabels {
            hub: hub.to_string(),
            protocol,
        };
        Traffic {
            messages: self.0.messages_out.get_or_create_owned(&labels),
            bytes: self.0.bytes_out.get_or_create_owned(&labels),
            totals: self.0.clone(),
        }
    }

    /// An invocation ended (or was refused) with `outcome`; `method` must be a declared
    /// method's name or [`OTHER_METHOD`].
    pub fn invocation(&self, hub: &str, method: &'static str, outcome: Outcome) {
        self.0
            .invocations
            .get_or_create(&InvocationLabels {
                hub: hub.to_string(),
                method,
                outcome: outcome.code(),
            })
            .inc();
        self.0.totals.invocations.fetch_add(1, Ordering::Relaxed);
    }

    /// How long a method ran.
    pub fn invocation_time(&self, hub: &str, method: &'static str, elapsed: Duration) {
        self.0
            .invocation_seconds
            .get_or_create(&MethodLabels {
                hub: hub.to_string(),
                method,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A call forwarded to an upstream ended with `outcome`.
    pub fn upstream_call(&self, hub: &str, method: &'static str, outcome: &'static str) {
        self.0
            .upstream_calls
            .get_or_create(&InvocationLabels {
                hub: hub.to_string(),
                method,
                outcome,
            })
            .inc();
    }

    /// A connection event posted to an upstream ended with `outcome`.
    pub fn upstream_event(&self, hub: &str, event: &'static str, outcome: &'static str) {
        self.0
            .upstream_events
            .get_or_create(&UpstreamEventLabels {
                hub: hub.to_string(),
                event,
                outcome,
            })
            .inc();
    }

    pub fn envelope_rejected(&self, code: &'static str) {
        self.0
            .envelope_rejections
            .get_or_create(&CodeLabel { code })
            .inc();
        self.0
            .totals
            .envelope_rejections
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A token refused: a [`crate::auth::TokenError::code`], or `missing`.
    pub fn auth_failed(&self, reason: &'static str) {
        self.0
            .auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// `kind`: `session` or `connection`; `outcome`: `success`, `invalid`, `reuse_detected`...
    pub fn token_refreshed(&self, kind: &'static str, outcome: &'static str) {
        self.0
            .token_refreshes
            .get_or_create(&RefreshLabels { kind, outcome })
            .inc();
    }

    /// A revocation event reached the connection enforcer.
    pub fn revocation_applied(&self, kind: &'static str) {
        self.0.revocations.get_or_create(&KindLabel { kind }).inc();
    }

    /// A live connection closed by a revocation.
    pub fn revocation_closed_connection(&self) {
        self.0.revocation_closes.inc();
    }

    pub fn login(&self, outcome: &'static str) {
        self.0.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A request refused by the limit named `limit` (`login`, and the per-user caps:
    /// `connections`, `pending_commands`, `nonces` when they are wired).
    pub fn rate_limited(&self, limit: &'static str) {
        self.0
            .rate_limited
            .get_or_create(&LimitLabel { limit })
            .inc();
    }

    /// A publish API call: `action` as scopes name it, `outcome` from a fixed set.
    pub fn publish_call(&self, action: &'static str, outcome: &'static str) {
        self.0
            .publish_calls
            .get_or_create(&PublishLabels { action, outcome })
            .inc();
    }

    /// A request forwarded to the node holding its connection: `answered` is false when no
    /// answer came.
    pub fn forwarded(&self, kind: &'static str, answered: bool) {
        let label = KindLabel { kind };
        self.0.forwarded.get_or_create(&label).inc();
        if !answered {
            self.0.forward_failures.get_or_create(&label).inc();
        }
    }

    pub fn store_query(&self, operation: &'static str, elapsed: Duration, ok: bool) {
        let labels = OperationLabel { operation };
        self.0
            .store_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        // Created at zero with the operation's first use, so an error rate has a series.
        let errors = self.0.store_errors.get_or_create(&labels);
        if !ok {
            errors.inc();
        }
    }

    /// Totals for the console charts: `(messages, invocations, envelope rejections)`.
    fn totals(&self) -> (u64, u64, u64) {
        let t = &self.0.totals;
        (
            t.messages.load(Ordering::Relaxed),
            t.invocations.load(Ordering::Relaxed),
            t.envelope_rejections.load(Ordering::Relaxed),
        )
    }

    /// Live connections, for the console charts.
    fn connection_count(&self) -> i64 {
        self.0
            .census
            .get()
            .map_or(0, |c| c.census().connections.values().sum())
    }
}

/// `signet_connections{hub,transport,protocol}` and the queue depth gauge, from the registry.
struct ConnectionCollector(Arc<OnceLock<Arc<dyn ConnectionCensus>>>);

impl std::fmt::Debug for ConnectionCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionCollector")
    }
}

impl Collector for ConnectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let census = self.0.get().map(|c| c.census()).unwrap_or_default();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "signet_connections",
            "Connections held now (negotiated or connected), by hub, transport and protocol.",
            None,
            gauge.metric_type(),
        )?;
        let mut rows: Vec<_> = census.connections.into_iter().collect();
        rows.sort();
        for ((hub, transport, protocol), n) in rows {
            let labels = HubLabels {
                hub,
                transport,
                protocol,
            };
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        let depth = ConstGauge::new(census.max_queue_depth as i64);
        depth.encode(encoder.encode_descriptor(
            "signet_outbound_queue_depth_max",
            "Frames waiting in the fullest outbound queue now.",
            None,
            depth.metric_type(),
        )?)?;
        Ok(())
    }
}

/// The gauges of [`Metrics::watch_gauge`].
struct SampledCollector(Arc<Mutex<Vec<SampledGauge>>>);

impl std::fmt::Debug for SampledCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SampledCollector")
    }
}

impl Collector for SampledCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges: Vec<SampledGauge> = match self.0.lock() {
            Ok(gauges) => gauges.clone(),
            Err(_) => return Ok(()),
        };
        for (name, help, read) in gauges {
            let gauge = ConstGauge::new(read());
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
