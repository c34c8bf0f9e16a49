//! The command line: parse, raise the file limit, run one scenario against Signet (or the
//! baseline), optionally against a baseline server started here too (`--compare`) and against
//! peer servers started here (`--peer`), and print one JSON line on stdout plus a human summary
//! on stderr.

use crate::client::{Endpoint, SourceAddrs};
use crate::credentials::Credentials;
use crate::peers::{PeerSpec, ServerChild};
use crate::scenario::broadcast::BroadcastOptions;
use crate::scenario::command::CommandOptions;
use crate::scenario::echo::{EchoMode, EchoOptions};
use crate::scenario::idle::IdleOptions;
use crate::scenario::replay::ReplayOptions;
use crate::scenario::revocation::RevocationOptions;
use crate::scenario::soak::SoakOptions;
use crate::scenario::{self, round, Outcome, Spread, Target, TargetKind};
use crate::system;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use signet_protocol::duration::parse_duration_allowing_zero;
use signet_protocol::protocol::HubProtocol;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "signet-bench",
    about = "Load generator for Signet, and the baseline server it is compared with",
    after_help = "Each scenario prints one JSON line on stdout and a summary on stderr. See BENCHMARKS.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Authenticated connections per second (negotiate, upgrade, handshake) and failures.
    Connect {
        #[command(flatten)]
        common: Common,
    },
    /// Hold N idle connections: server memory per connection and CPU while idle.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Wait after the last connection opened, before measuring.
        #[arg(long, default_value = "2s", value_parser = parse_duration_allowing_zero)]
        settle: Duration,
        /// How long the idle connections are held while the server's CPU is measured.
        #[arg(long, default_value = "10s", value_parser = parse_duration_allowing_zero)]
        hold: Duration,
    },
    /// Round trips per second and latency: `Echo`, then `EchoSigned` with signed envelopes.
    Echo {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        timing: Timing,
        #[arg(long, value_enum, default_value_t = EchoMode::Both)]
        mode: EchoMode,
        /// Lifetime of the signed envelopes; the server keeps each nonce this long plus its
        /// clock skew, so lifetime x rate must fit `envelope.nonce_capacity`.
        #[arg(long, default_value = "5s", value_parser = parse_duration_allowing_zero)]
        envelope_lifetime: Duration,
    },
    /// One admin broadcasting to N connections: deliveries per second and delivery latency.
    Broadcast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        timing: Timing,
        /// Broadcasts per second (default: as fast as flow control allows).
        #[arg(long)]
        rate: Option<f64>,
        /// Broadcasts in flight: the admin waits until deliveries are within this many
        /// broadcasts of what it sent.
        #[arg(long, default_value_t = 32)]
        window: u64,
        /// Padding added to each broadcast text, in bytes.
        #[arg(long, default_value_t = 0)]
        payload_bytes: usize,
    },
    /// A user sending signed commands to their devices through the hub and back. Logs in as a
    /// real user (the bootstrap `admin` by default), provisions devices, removes them after.
    /// --connections is the user's connections; each result reaches all of them.
    Command {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        timing: Timing,
        /// Devices provisioned and connected (at most `identity.max_devices_per_user`).
        #[arg(long, default_value_t = 20)]
        devices: usize,
        /// The user to log in as.
        #[arg(long, env = "SIGNET_BENCH_USERNAME", default_value = "admin")]
        username: String,
        /// Their password (the bootstrap admin's is in `<data_dir>/initial-admin-password`).
        #[arg(long, env = "SIGNET_BENCH_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Across nodes: each connection's user logs out (`POST /api/auth/logout`) on the first
    /// server while the connection is open on another; the time until that node closes it.
    /// --connections is the number of users.
    Revocation {
        #[command(flatten)]
        common: Common,
        /// Logouts in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// How long a connection may stay open after its logout before it counts as not closed.
        #[arg(long, default_value = "10s", value_parser = parse_duration_allowing_zero)]
        close_timeout: Duration,
    },
    /// Across nodes: signed `EchoSigned` envelopes each accepted on the first server, then the
    /// very same envelope sent on another; counts the replays accepted (the goal is none).
    /// --connections is the number of sessions, each with a connection on both servers.
    Replay {
        #[command(flatten)]
        common: Common,
        /// Envelopes sent (each accepted once, then replayed once).
        #[arg(long, default_value_t = 10_000)]
        attempts: u64,
        /// Lifetime of the envelopes.
        #[arg(long, default_value = "30s", value_parser = parse_duration_allowing_zero)]
        envelope_lifetime: Duration,
    },
    /// Connection churn for a long time (see scripts/soak.sh): N slots each connect, hold for a
    /// random time (tokens expire: use a short --token-ttl), and connect again; revocations of
    /// real users and malformed frames and HTTP requests mixed in.
    Soak {
        #[command(flatten)]
        common: Common,
        /// How long the churn runs.
        #[arg(long, default_value = "10m", value_parser = parse_duration_allowing_zero)]
        duration: Duration,
        /// A real user `username=id` (id as `signet user list` prints it) whose tokens one slot
        /// in ten carries and whom an admin revokes in turn; repeat for several.
        #[arg(long = "revocable", value_name = "NAME=ID", value_parser = parse_user)]
        revocable: Vec<(String, String)>,
        /// Pause between admin revocations.
        #[arg(long, default_value = "20s", value_parser = parse_duration_allowing_zero)]
        revoke_every: Duration,
        /// One connection in this many sends a malformed frame (0: none).
        #[arg(long, default_value_t = 50)]
        garbage_every: u64,
        /// Pause between malformed HTTP requests (0: none).
        #[arg(long, default_value = "200ms", value_parser = parse_duration_allowing_zero)]
        http_garbage_interval: Duration,
    },
    /// Run the baseline server: a WebSocket echo and fan-out on actix-ws, nothing else.
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
        /// Worker threads (default: CPU cores, as Signet's `server.workers`).
        #[arg(long)]
        workers: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Protocol {
    Json,
    Messagepack,
}

#[derive(Debug, Args)]
pub struct Common {
    /// The server: Signet, or the baseline server with --baseline.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Several servers (the nodes of one cluster), comma-separated, instead of --url;
    /// connections are spread over them as --spread says. The first one answers REST requests.
    #[arg(long, value_delimiter = ',', conflicts_with = "url")]
    pub servers: Vec<String>,
    /// With --servers: `all` spreads every connection round robin; `across` puts the sending
    /// side on the first server and the receiving side on the others (cross-node deliveries).
    #[arg(long, value_enum, default_value_t = Spread::All)]
    pub spread: Spread,
    /// The hub to connect to (`/hubs/<hub>`).
    #[arg(long, default_value = "home")]
    pub hub: String,
    /// SignalR protocol (on the baseline: JSON sends text frames, MessagePack binary ones).
    #[arg(long, value_enum, default_value_t = Protocol::Json)]
    pub protocol: Protocol,
    /// Connections (in broadcast: receivers, plus one admin).
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,
    /// Distinct users the connections belong to (default: one per connection).
    #[arg(long)]
    pub users: Option<usize>,
    /// The server's JWT signing secret, to mint tokens.
    #[arg(long, env = "SIGNET__JWT__SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The server's envelope master key, to derive message keys for signed calls.
    #[arg(long, env = "SIGNET__ENVELOPE__SECRET", hide_env_values = true)]
    pub envelope_secret: Option<String>,
    #[arg(long, default_value = "signet")]
    pub issuer: String,
    #[arg(long, default_value = "signet")]
    pub audience: String,
    /// Lifetime of the minted tokens (a connection closes when its token expires).
    #[arg(long, default_value = "1h", value_parser = parse_duration_allowing_zero)]
    pub token_ttl: Duration,
    /// The server's process id, for its memory and CPU figures; with --servers, every node's,
    /// comma-separated (their figures are summed).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// --url is the baseline server: raw frames, no negotiate, no tokens.
    #[arg(long)]
    pub baseline: bool,
    /// Also run the scenario against a baseline server started here, and print the ratio.
    #[arg(long, conflicts_with = "baseline")]
    pub compare: bool,
    /// Worker threads of the baseline started by --compare (default: CPU cores).
    #[arg(long)]
    pub baseline_workers: Option<usize>,
    /// Also run the scenario (connect, idle, echo, broadcast) against this peer server, started
    /// here as a child process after the Signet (and baseline) run: `socketioxide`,
    /// `socketio-node` or `aiosignalr`, optionally `=COMMAND` (whitespace-separated words, the
    /// listen address appended; default: the peer's program under clients/bench/peers, run from
    /// the repository root). Repeat for several; each is reported under `peers` in the JSON line.
    #[arg(long = "peer", value_name = "NAME[=COMMAND]", value_parser = PeerSpec::parse)]
    pub peers: Vec<PeerSpec>,
    /// Connect from 127.0.0.1 up to 127.0.0.N, so more than one address's ports are usable.
    #[arg(long, default_value_t = 16)]
    pub source_addrs: u8,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Generator threads (default: CPU cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Open the WebSocket directly, without negotiate (as `skipNegotiation`).
    #[arg(long)]
    pub skip_negotiation: bool,
}

#[derive(Debug, Args)]
pub struct Timing {
    /// Load before measuring starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration_allowing_zero)]
    pub warmup: Duration,
    /// The measured part.
    #[arg(long, default_value = "10s", value_parser = parse_duration_allowing_zero)]
    pub duration: Duration,
}

/// `name=id`: a user name and the id its tokens carry as `sub`.
fn parse_user(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, id)) if !name.is_empty() && !id.is_empty() => {
            Ok((name.to_string(), id.to_string()))
        }
        _ => Err(format!("`{text}` is not NAME=ID")),
    }
}

/// Runs the command; exit status 0 when the scenario ran, 1 when it could not.
pub fn run(cli: Cli) -> ExitCode {
    let (name, common) = match &cli.command {
        Command::BaselineServer { listen, workers } => return serve_baseline(*listen, *workers),
        Command::Connect { common } => ("connect", common),
        Command::Idle { common, .. } => ("idle", common),
        Command::Echo { common, .. } => ("echo", common),
        Command::Broadcast { common, .. } => ("broadcast", common),
        Command::Command { common, .. } => ("command", common),
        Command::Revocation { common, .. } => ("revocation", common),
        Command::Replay { common, .. } => ("replay", common),
        Command::Soak { common, .. } => ("soak", common),
    };
    // Each connection is one descriptor here, and one more in a baseline started by --compare.
    let wanted = (common.connections as u64 + 1) * 2 + 1024;
    let limit = system::raise_file_limit(wanted);
    if limit < common.connections as u64 + 64 {
        eprintln!(
            "warning: the open-file limit is {limit}, below the {} connections asked for; \
             raise the hard limit (`ulimit -Hn`, as root or with CAP_SYS_RESOURCE)",
            common.connections
        );
    }
    let threads = common.threads.unwrap_or_else(cores);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run_scenario(&cli.command, common, threads));
    let (line, ok) = match result {
        Ok(line) => (line, true),
        Err(error) => (json!({ "scenario": name, "error": error }), false),
    };
    println!("{line}");
    let _ = std::io::stdout().flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: {}", line["error"].as_str().unwrap_or("unknown"));
        ExitCode::FAILURE
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

async fn run_scenario(command: &Command, common: &Common, threads: usize) -> Result<Value, String> {
    let name = scenario_name(command);
    let kind = if common.baseline {
        TargetKind::Baseline
    } else {
        TargetKind::Signet
    };
    let urls = if common.servers.is_empty() {
        vec![common.url.clone()]
    } else {
        common.servers.clone()
    };
    let primary = target(common, kind, &urls, common.server_pid.clone())?;
    let mut line = measured(name, command, &primary).await?;
    line["generator_threads"] = json!(threads);
    eprintln!("== {name}: {}", describe(&line));
    eprintln!(
        "   {}: {}",
        kind.name(),
        line["summary"].as_str().unwrap_or("")
    );

    let signet_only = ["command", "soak", "revocation", "replay"];
    if common.compare && !signet_only.contains(&name) {
        let workers = common.baseline_workers.unwrap_or_else(cores);
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let args = ["baseline-server", "--listen", "127.0.0.1:0", "--workers"]
            .map(str::to_string)
            .into_iter()
            .chain([workers.to_string()])
            .collect::<Vec<_>>();
        let baseline = ServerChild::spawn("baseline server", &exe.to_string_lossy(), &args)?;
        let url = format!("http://{}", baseline.address);
        let other = target(common, TargetKind::Baseline, &[url], vec![baseline.pid()])?;
        let compared = measured(name, command, &other).await;
        drop(baseline);
        let compared = compared?;
        eprintln!(
            "   baseline: {}",
            compared["summary"].as_str().unwrap_or("")
        );
        if let (Some(name), Some(ours), Some(theirs)) = (
            line["headline"].as_str().map(str::to_string),
            line["headline_value"].as_f64(),
            compared["headline_value"].as_f64(),
        ) {
            if theirs > 0.0 {
                let ratio = round(ours / theirs, 3);
                line["ratio_to_baseline"] = json!({ "metric": name, "ratio": ratio });
                eprintln!("   signet / baseline ({name}): {ratio}");
            }
        }
        line["baseline"] = compared;
    }
    if !common.peers.is_empty() {
        let mut peers = serde_json::Map::new();
        for spec in &common.peers {
            let measured = measure_peer(name, command, common, spec, &line).await;
            let measured = measured.unwrap_or_else(|error| {
                // A peer that fails is reported, and the others still run.
                eprintln!("   {}: error: {error}", spec.peer.name());
                json!({ "target": spec.peer.name(), "error": error })
            });
            peers.insert(spec.peer.name().to_string(), measured);
        }
        line["peers"] = Value::Object(peers);
    }
    Ok(line)
}

/// The scenario against one peer started here; with its configuration and `signet_over_peer`,
/// Signet's headline figure divided by the peer's.
async fn measure_peer(
    name: &str,
    command: &Command,
    common: &Common,
    spec: &PeerSpec,
    signet: &Value,
) -> Result<Value, String> {
    let peer = spec.peer;
    if !peer.supports(name) {
        return Err(format!("{} does not implement `{name}`", peer.name()));
    }
    if !peer.speaks_signalr() && matches!(common.protocol, Protocol::Messagepack) {
        return Err("the Socket.IO peers are driven with JSON text packets only".into());
    }
    let (program, args) = spec.command.split_first().ok_or("empty peer command")?;
    let mut args = args.to_vec();
    args.push("127.0.0.1:0".to_string());
    let server = ServerChild::spawn(peer.name(), program, &args)?;
    let url = format!("http://{}", server.address);
    let target = target(common, TargetKind::Peer(peer), &[url], vec![server.pid()])?;
    let measured = measured(name, command, &target).await;
    drop(server);
    let mut line = measured?;
    line["configuration"] = json!(peer.configuration());
    if let (Some(ours), Some(theirs)) = (
        signet["headline_value"].as_f64(),
        line["headline_value"].as_f64(),
    ) {
        if theirs > 0.0 {
            line["signet_over_peer"] = json!(round(ours / theirs, 3));
        }
    }
    eprintln!(
        "   {}: {}",
        peer.name(),
        line["summary"].as_str().unwrap_or("")
    );
    Ok(line)
}

/// One scenario against one target, with the load average before and after.
async fn measured(name: &str, command: &Command, target: &Target) -> Result<Value, String> {
    let load_before = system::load_average();
    let outcome = dispatch(command, target).await?;
    let load_after = system::load_average();
    let Outcome {
        figures,
        headline,
        summary,
    } = outcome;
    let mut line = json!({
        "scenario": name,
        "target": target.kind.name(),
        "url": format!("http://{}{}", target.endpoint.authority, target.endpoint.path),
        "protocol": target.protocol.name(),
        "server_pid": target.server_pids.first(),
        "load_average": { "before": load_before, "after": load_after },
    });
    if target.nodes.len() > 1 {
        let servers: Vec<String> = target
            .nodes
            .iter()
            .map(|node| format!("http://{}", node.authority))
            .collect();
        line["servers"] = json!(servers);
        line["spread"] = json!(format!("{:?}", target.spread).to_lowercase());
        line["server_pids"] = json!(target.server_pids);
    }
    if let (Value::Object(line), Value::Object(figures)) = (&mut line, figures) {
        line.extend(figures);
    }
    if let Some((metric, value)) = headline {
        line["headline"] = json!(metric);
        line["headline_value"] = json!(value);
    }
    line["summary"] = json!(summary);
    Ok(line)
}

async fn dispatch(command: &Command, target: &Target) -> Result<Outcome, String> {
    match command {
        Command::Connect { common } => scenario::connect::run(target, common.connections).await,
        Command::Idle {
            common,
            settle,
            hold,
        } => {
            let options = IdleOptions {
                connections: common.connections,
                settle: *settle,
                hold: *hold,
            };
            scenario::idle::run(target, &options).await
        }
        Command::Echo {
            common,
            timing,
            mode,
            envelope_lifetime,
        } => {
            let options = EchoOptions {
                connections: common.connections,
                warmup: timing.warmup,
                duration: timing.duration,
                mode: *mode,
                envelope_lifetime: *envelope_lifetime,
            };
            scenario::echo::run(target, &options).await
        }
        Command::Broadcast {
            common,
            timing,
            rate,
            window,
            payload_bytes,
        } => {
            let options = BroadcastOptions {
                connections: common.connections,
                warmup: timing.warmup,
                duration: timing.duration,
                rate: *rate,
                window: *window,
                payload_bytes: *payload_bytes,
            };
            scenario::broadcast::run(target, &options).await
        }
        Command::Command {
            common,
            timing,
            devices,
            username,
            password,
        } => {
            let options = CommandOptions {
                connections: common.connections,
                devices: *devices,
                warmup: timing.warmup,
                duration: timing.duration,
                username: username.clone(),
                password: password.clone(),
            };
            scenario::command::run(target, &options).await
        }
        Command::Revocation {
            common,
            concurrency,
            close_timeout,
        } => {
            let options = RevocationOptions {
                users: common.connections,
                concurrency: *concurrency,
                close_timeout: *close_timeout,
            };
            scenario::revocation::run(target, &options).await
        }
        Command::Replay {
            common,
            attempts,
            envelope_lifetime,
        } => {
            let options = ReplayOptions {
                sessions: common.connections,
                attempts: *attempts,
                envelope_lifetime: *envelope_lifetime,
            };
            scenario::replay::run(target, &options).await
        }
        Command::Soak {
            common,
            duration,
            revocable,
            revoke_every,
            garbage_every,
            http_garbage_interval,
        } => {
            let options = SoakOptions {
                connections: common.connections,
                duration: *duration,
                token_ttl: common.token_ttl,
                revoke_every: *revoke_every,
                revocable: revocable.clone(),
                garbage_every: *garbage_every,
                http_garbage_interval: *http_garbage_interval,
            };
            scenario::soak::run(target, &options).await
        }
        Command::BaselineServer { .. } => Err("not a scenario".into()),
    }
}

fn scenario_name(command: &Command) -> &'static str {
    match command {
        Command::Connect { .. } => "connect",
        Command::Idle { .. } => "idle",
        Command::Echo { .. } => "echo",
        Command::Broadcast { .. } => "broadcast",
        Command::Command { .. } => "command",
        Command::Revocation { .. } => "revocation",
        Command::Replay { .. } => "replay",
        Command::Soak { .. } => "soak",
        Command::BaselineServer { .. } => "baseline-server",
    }
}

fn describe(line: &Value) -> String {
    let load = &line["load_average"]["before"];
    format!(
        "{} ({}), load average before {}",
        line["url"].as_str().unwrap_or(""),
        line["protocol"].as_str().unwrap_or(""),
        load
    )
}

fn target(
    common: &Common,
    kind: TargetKind,
    urls: &[String],
    server_pids: Vec<u32>,
) -> Result<Target, String> {
    let path = match kind {
        TargetKind::Signet => format!("/hubs/{}", common.hub),
        TargetKind::Peer(peer) if peer.speaks_signalr() => format!("/hubs/{}", common.hub),
        TargetKind::Peer(_) => crate::socketio::PATH.to_string(),
        TargetKind::Baseline => "/ws".to_string(),
    };
    let credentials = match (kind, &common.jwt_secret) {
        (TargetKind::Signet, Some(secret)) => Some(Arc::new(Credentials::new(
            secret,
            common.envelope_secret.as_deref(),
            &common.issuer,
            &common.audience,
            common.token_ttl,
        ))),
        _ => None,
    };
    let nodes = urls
        .iter()
        .map(|url| Endpoint::new(url, &path))
        .collect::<Result<Vec<_>, _>>()?;
    let endpoint = nodes.first().cloned().ok_or("no server given")?;
    Ok(Target {
        kind,
        endpoint,
        nodes,
        spread: common.spread,
        protocol: match common.protocol {
            Protocol::Json => HubProtocol::Json,
            Protocol::Messagepack => HubProtocol::MessagePack,
        },
        skip_negotiation: common.skip_negotiation,
        sources: SourceAddrs::loopback(common.source_addrs),
        connect_concurrency: common.connect_concurrency,
        credentials,
        server_pids,
        users: common.users.unwrap_or(common.connections).max(1),
    })
}

/// Runs the baseline server in this process until it is killed.
fn serve_baseline(listen: SocketAddr, workers: Option<usize>) -> ExitCode {
    system::raise_file_limit(1 << 20);
    let workers = workers.unwrap_or_else(cores);
    let result = actix_web::rt::System::new().block_on(async move {
        let (address, server) = crate::baseline::bind(listen, workers)?;
        // The parent reads this line to learn the port.
        println!("listening on {address}");
        std::io::stdout().flush()?;
        server.await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: baseline server: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
