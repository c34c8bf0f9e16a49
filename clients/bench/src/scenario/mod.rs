//! The scenarios. Each is written once against [`Client`] and runs against Signet, the
//! baseline or a peer; each returns its figures as JSON plus a one-line summary and, where there is one, a
//! headline rate that `--compare` divides by the baseline's.

pub mod broadcast;
pub mod command;
pub mod connect;
pub mod echo;
pub mod idle;
pub mod replay;
pub mod revocation;
pub mod soak;

use crate::client::{bounded, Client, ClientError, Endpoint, HubClient, RawClient, SourceAddrs};
use crate::credentials::{Credentials, Identity};
use crate::peers::{Peer, PEER_TOKEN};
use crate::socketio::SocketIoClient;
use crate::stats::{Latencies, LatencySummary};
use serde_json::Value;
use signet_protocol::protocol::{HubProtocol, MessageType};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Longest a single connection attempt (TCP, negotiate, upgrade, handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest any single request/response exchange may take before the connection counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Signet,
    Baseline,
    Peer(Peer),
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Signet => "signet",
            Self::Baseline => "baseline",
            Self::Peer(peer) => peer.name(),
        }
    }
}

/// How connections are spread over several servers (`--servers`, the nodes of one cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spread {
    /// Every kind of connection round robin over all servers.
    All,
    /// The sending side (broadcast's admin, command's user) on the first server, the receiving
    /// side (receivers, devices) on the others: every delivery crosses nodes.
    Across,
}

/// Everything a scenario needs to know about the server it drives and how to connect.
#[derive(Clone)]
pub struct Target {
    pub kind: TargetKind,
    /// The first server: REST requests, and the sending side across nodes.
    pub endpoint: Endpoint,
    /// Every server connections are spread over (the first is `endpoint`); one without --servers.
    pub nodes: Vec<Endpoint>,
    pub spread: Spread,
    pub protocol: HubProtocol,
    pub skip_negotiation: bool,
    pub sources: SourceAddrs,
    pub connect_concurrency: usize,
    /// Signet's secrets; unused for the baseline.
    pub credentials: Option<Arc<Credentials>>,
    /// The servers' processes, for memory and CPU figures (summed over them).
    pub server_pids: Vec<u32>,
    /// Distinct users the connections are spread over.
    pub users: usize,
}

/// What a scenario reports.
pub struct Outcome {
    pub figures: Value,
    /// The rate `--compare` divides by the baseline's, e.g. `("round_trips_per_s", 1234.0)`.
    pub headline: Option<(&'static str, f64)>,
    pub summary: String,
}

impl Target {
    /// This target narrowed to `nodes` (never empty: the first server when `nodes` is).
    fn on(&self, nodes: &[Endpoint]) -> Self {
        let nodes = if nodes.is_empty() {
            vec![self.endpoint.clone()]
        } else {
            nodes.to_vec()
        };
        Self {
            endpoint: nodes[0].clone(),
            nodes,
            ..self.clone()
        }
    }

    /// Where the sending side connects: the first server.
    pub fn senders(&self) -> Self {
        self.on(&self.nodes[..1.min(self.nodes.len())])
    }

    /// The servers other than the first (the first when there is no other): where a message
    /// sent on the first one is received, a replay tried, a revocation awaited.
    pub fn remote(&self) -> Self {
        self.on(self.nodes.get(1..).unwrap_or_default())
    }

    /// Where the receiving side connects: every server, or the remote ones with `--spread across`.
    pub fn receivers(&self) -> Self {
        match self.spread {
            Spread::All => self.clone(),
            Spread::Across => self.remote(),
        }
    }

    /// The server connection number `index` goes to (round robin).
    pub fn node(&self, index: usize) -> &Endpoint {
        self.nodes
            .get(index % self.nodes.len().max(1))
            .unwrap_or(&self.endpoint)
    }

    /// Mints the identities of `count` connections of `kind` (`user`, `admin`) with `roles`.
    pub fn identities(
        &self,
        kind: &str,
        count: usize,
        roles: &[&str],
    ) -> Result<Vec<Option<Identity>>, String> {
        match &self.credentials {
            None if self.kind == TargetKind::Signet => {
                Err("Signet needs --jwt-secret (or SIGNET__JWT__SECRET)".into())
            }
            None => Ok((0..count).map(|_| None).collect()),
            Some(credentials) => (0..count)
                .map(|i| {
                    credentials
                        .identity(kind, i, self.users, roles)
                        .map(Some)
                        .map_err(|e| format!("cannot mint a token: {e}"))
                })
                .collect(),
        }
    }

    /// Opens connection number `index` (its number picks the source address).
    pub async fn open(
        &self,
        index: usize,
        identity: Option<&Identity>,
    ) -> Result<Client, ClientError> {
        let source = self.sources.for_index(index);
        match (self.kind, identity) {
            (TargetKind::Signet, Some(identity)) => HubClient::connect(
                self.node(index),
                source,
                &identity.token,
                self.protocol,
                self.skip_negotiation,
            )
            .await
            .map(Client::Hub),
            (TargetKind::Signet, None) => Err(ClientError::Handshake("no token".into())),
            (TargetKind::Peer(peer), _) if peer.speaks_signalr() => HubClient::connect(
                self.node(index),
                source,
                PEER_TOKEN,
                self.protocol,
                self.skip_negotiation,
            )
            .await
            .map(Client::Hub),
            (TargetKind::Peer(_), _) => SocketIoClient::connect(self.node(index), source)
                .await
                .map(Client::SocketIo),
            (TargetKind::Baseline, _) => {
                let binary = self.protocol == HubProtocol::MessagePack;
                RawClient::connect(self.node(index), source, binary)
                    .await
                    .map(Client::Raw)
            }
        }
    }

    /// Opens one connection per identity, at most `connect_concurrency` at a time, each on its
    /// own task so the generator's threads share the client-side work.
    pub async fn establish(&self, identities: Vec<Option<Identity>>) -> Established {
        self.establish_from(0, identities).await
    }

    /// As [`Target::establish`], numbering connections from `first` (for source addresses).
    pub async fn establish_from(
        &self,
        first: usize,
        identities: Vec<Option<Identity>>,
    ) -> Established {
        let count = identities.len();
        let permits = Arc::new(Semaphore::new(self.connect_concurrency.max(1)));
        let latencies = Arc::new(Latencies::new());
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (offset, identity) in identities.into_iter().enumerate() {
            let target = self.clone();
            let permits = permits.clone();
            let latencies = latencies.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let began = Instant::now();
                let index = first + offset;
                let result = bounded(CONNECT_TIMEOUT, target.open(index, identity.as_ref())).await;
                if result.is_ok() {
                    latencies.record(index, began.elapsed());
                }
                (offset, result, identity)
            });
        }
        let mut slots: Vec<Option<(Client, Option<Identity>)>> = (0..count).map(|_| None).collect();
        let mut failures = 0;
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((offset, Ok(client), identity)) => slots[offset] = Some((client, identity)),
                Ok((_, Err(err), _)) => {
                    failures += 1;
                    first_error.get_or_insert_with(|| err.to_string());
                }
                Err(err) => {
                    failures += 1;
                    first_error.get_or_insert_with(|| err.to_string());
                }
            }
        }
        let elapsed = started.elapsed();
        Established {
            connections: slots.into_iter().flatten().collect(),
            failures,
            first_error,
            elapsed,
            latency: latencies.summary(),
        }
    }
}

/// The connections a batch of attempts produced, and how the attempts went.
pub struct Established {
    /// Each open connection with the identity it was opened with.
    pub connections: Vec<(Client, Option<Identity>)>,
    pub failures: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: LatencySummary,
}

impl Established {
    pub fn rate(&self) -> f64 {
        self.connections.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn figures(&self) -> Value {
        serde_json::json!({
            "established": self.connections.len(),
            "failures": self.failures,
            "first_error": self.first_error,
            "elapsed_s": round(self.elapsed.as_secs_f64(), 3),
            "connects_per_s": round(self.rate(), 1),
            "connect_latency": self.latency,
        })
    }
}

/// Closes every connection politely, a bounded number at a time.
pub async fn close_all(connections: Vec<Client>) {
    let mut tasks = tokio::task::JoinSet::new();
    for client in connections {
        tasks.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The measurement window of a timed scenario: a warm-up, then the measured part.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    pub fn contains(&self, at: Instant) -> bool {
        at >= self.start && at <= self.end
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// CPU of `pids` (together) over a window, measured by a task that wakes at its start and end.
/// A JSON hub message from the server, as the lean readers of `broadcast` and `echo` see it
/// (`T` borrows what it keeps from `record`), and its wire type; a record that is not JSON or
/// not `T` is the server's error.
pub(crate) fn read_record<'a, T: serde::Deserialize<'a>>(
    record: &'a [u8],
    kind: impl Fn(&T) -> u8,
) -> Result<(Option<MessageType>, T), ClientError> {
    let message: T = serde_json::from_slice(record)
        .map_err(|e| ClientError::BadResponse(format!("a message from the server: {e}")))?;
    Ok((MessageType::from_wire(i64::from(kind(&message))), message))
}

pub fn measure_cpu(
    pids: Vec<u32>,
    window: Window,
) -> tokio::task::JoinHandle<Option<crate::system::CpuUse>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(window.start.into()).await;
        let meter = crate::system::CpuMeter::of(&pids)?;
        tokio::time::sleep_until(window.end.into()).await;
        meter.stop()
    })
}

/// Keeps the first error a run met, for its JSON line.
pub fn remember(slot: &std::sync::Mutex<Option<String>>, error: String) {
    if let Ok(mut slot) = slot.lock() {
        slot.get_or_insert(error);
    }
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
