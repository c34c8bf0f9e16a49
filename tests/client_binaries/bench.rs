//! A short run of every scenario, so the load generator cannot rot: a real Signet server started
//! in-process on port 0 (as the server's own integration tests do) and the baseline server, each
//! driven by the `signet-bench` binary for about a second with 20 connections. The figures mean
//! nothing here (debug build, tiny N, a busy machine); the test checks that each scenario runs,
//! prints one JSON line and did real work. Benchmarks are never assertions.

use crate::Test;
use serde_json::Value;
use signet::Application;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "smoke-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
const ENVELOPE_SECRET: &str = "smoke-envelope-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
/// Bounds one scenario run, so a hang fails the test instead of stalling the suite.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const CONNECTIONS: &str = "20";

/// Starts Signet on its own actix system in a background thread; returns its address.
fn start_signet(data_dir: &Path) -> SocketAddr {
    let env = [
        ("SIGNET__SERVER__LISTEN", "127.0.0.1:0"),
        ("SIGNET__SERVER__DATA_DIR", &data_dir.display().to_string()),
        ("SIGNET__SERVER__WORKERS", "1"),
        ("SIGNET__JWT__SECRET", JWT_SECRET),
        ("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let settings = signet::settings::load_from_str("", Path::new("smoke"), env).expect("settings");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build(settings).await.expect("server builds");
            tx.send(app.address()).expect("test is waiting");
            let _ = app.run_until_stopped().await;
        })
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("signet started")
}

fn start_baseline() -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let (address, server) =
                signet_bench::baseline::bind("127.0.0.1:0".parse().expect("address"), 1)
                    .expect("baseline binds");
            tx.send(address).expect("test is waiting");
            let _ = server.await;
        })
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("baseline started")
}

/// Runs `signet-bench <args>` and returns its JSON line.
fn bench(args: &[&str]) -> Value {
    let started = Instant::now();
    let mut child = crate::client_command("signet-bench")
        .args(args)
        .args(["--threads", "1", "--source-addrs", "2"])
        .env("SIGNET__JWT__SECRET", JWT_SECRET)
        .env("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("signet-bench starts");
    loop {
        match child.try_wait().expect("status") {
            Some(_) => break,
            None if started.elapsed() > RUN_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("signet-bench {args:?} did not finish within {RUN_DEADLINE:?}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "signet-bench {} ({:.1} s)\n{stderr}",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    let line = stdout.lines().last().unwrap_or_default();
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nstderr: {stderr}"));
    assert!(
        output.status.success() && value.get("error").is_none(),
        "signet-bench {args:?} failed: {value}\nstderr: {stderr}"
    );
    value
}

fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {value}"))
}

fn every_scenario_runs_against_signet_and_the_baseline() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let signet = format!("http://{}", start_signet(data_dir.path()));
    let baseline = format!("http://{}", start_baseline());
    let pid = std::process::id().to_string();
    let short = ["--warmup", "200ms", "--duration", "1s"];

    // connect, with --compare: a baseline server in a child process, and the ratio.
    let line = bench(&["connect", "--url", &signet, "-c", CONNECTIONS, "--compare"]);
    assert_eq!(number(&line, "/established"), 20.0);
    assert_eq!(number(&line, "/failures"), 0.0);
    assert!(number(&line, "/connects_per_s") > 0.0);
    assert_eq!(number(&line, "/baseline/established"), 20.0);
    assert!(number(&line, "/ratio_to_baseline/ratio") > 0.0);
    assert_eq!(line["skip_negotiation"], false, "{line}");

    // connect without negotiate (skipNegotiation): one upgrade and the handshake each.
    let line = bench(&[
        "connect",
        "--url",
        &signet,
        "-c",
        CONNECTIONS,
        "--skip-negotiation",
    ]);
    assert_eq!(number(&line, "/established"), 20.0, "{line}");
    assert_eq!(number(&line, "/failures"), 0.0, "{line}");
    assert_eq!(line["skip_negotiation"], true, "{line}");

    // idle: the in-process server's pid is this test's, so only the shape is checked.
    for url in [&signet, &baseline] {
        let mut args = vec!["idle", "--url", url, "-c", CONNECTIONS];
        args.extend(["--settle", "100ms", "--hold", "500ms", "--server-pid", &pid]);
        if url == &baseline {
            args.push("--baseline");
        }
        let line = bench(&args);
        assert_eq!(number(&line, "/held"), 20.0, "{line}");
        assert!(line["server_rss_kib"]["after"].is_u64(), "{line}");
        assert!(line["server_cpu_idle"]["cpu_s"].is_f64(), "{line}");
    }

    // echo, plain and signed, over JSON and MessagePack.
    for protocol in ["json", "messagepack"] {
        let mut args = vec!["echo", "--url", &signet, "-c", CONNECTIONS];
        args.extend(["--protocol", protocol]);
        args.extend(short);
        let line = bench(&args);
        for mode in ["plain", "signed"] {
            assert!(
                number(&line, &format!("/{mode}/round_trips")) > 0.0,
                "{line}"
            );
            assert_eq!(number(&line, &format!("/{mode}/errors")), 0.0, "{line}");
            assert!(number(&line, &format!("/{mode}/latency/p99_ms")) > 0.0);
        }
    }
    let mut args = vec!["echo", "--url", &baseline, "--baseline", "-c", CONNECTIONS];
    args.extend(short);
    let line = bench(&args);
    assert!(number(&line, "/plain/round_trips") > 0.0, "{line}");

    // broadcast: every receiver gets every broadcast.
    for (url, protocol, is_baseline) in [
        (&signet, "json", false),
        (&signet, "messagepack", false),
        (&baseline, "json", true),
    ] {
        let mut args = vec!["broadcast", "--url", url, "-c", CONNECTIONS];
        args.extend(["--protocol", protocol]);
        args.extend(short);
        if is_baseline {
            args.push("--baseline");
        }
        let line = bench(&args);
        assert!(number(&line, "/deliveries_in_window") > 0.0, "{line}");
        assert_eq!(number(&line, "/receivers_lost"), 0.0, "{line}");
        assert_eq!(
            number(&line, "/delivered"),
            number(&line, "/expected_deliveries"),
            "{line}"
        );
        assert!(number(&line, "/delivery_latency/p99_ms") > 0.0);
    }

    // command: the bootstrap admin logs in, provisions devices, commands them and gets results.
    let password = std::fs::read_to_string(data_dir.path().join("initial-admin-password"))
        .expect("the first start wrote the bootstrap admin's password");
    let mut args = vec!["command", "--url", &signet, "-c", "2", "--devices", "4"];
    args.extend(short);
    // `=` keeps a password that starts with '-' from reading as a flag.
    let password_arg = format!("--password={}", password.trim());
    args.push(&password_arg);
    let line = bench(&args);
    assert_eq!(line["available"], true, "{line}");
    assert!(number(&line, "/round_trips") > 0.0, "{line}");
    assert_eq!(number(&line, "/errors"), 0.0, "{line}");
    assert!(number(&line, "/latency/p99_ms") > 0.0);
}

/// The many-node modes against one server named twice (`--servers url,url`): the code that
/// spreads connections and pairs them across servers runs, and what one node must do holds
/// (a logout closes the user's connection, a replay is refused). The two-node figures come from
/// `scripts/bench.sh cluster`, against real nodes.
fn the_many_node_modes_run_against_one_server_named_twice() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let signet = format!("http://{}", start_signet(data_dir.path()));
    let servers = format!("{signet},{signet}");
    let pids = format!("{0},{0}", std::process::id());
    let short = ["--warmup", "200ms", "--duration", "1s"];

    // broadcast with the admin on the first server and the receivers on the others.
    let mut args = vec!["broadcast", "--servers", &servers, "--spread", "across"];
    args.extend(["-c", "4", "--rate", "2000", "--server-pid", &pids]);
    args.extend(short);
    let line = bench(&args);
    assert_eq!(line["servers"].as_array().map(Vec::len), Some(2), "{line}");
    assert!(number(&line, "/deliveries_in_window") > 0.0, "{line}");
    assert_eq!(
        number(&line, "/delivered"),
        number(&line, "/expected_deliveries"),
        "{line}"
    );
    assert!(line["server_cpu"]["cpu_s"].is_f64(), "{line}");

    // revocation: every user's logout closes its connection as revoked.
    let line = bench(&["revocation", "--servers", &servers, "-c", "5"]);
    assert_eq!(number(&line, "/closed_as_revoked"), 5.0, "{line}");
    assert_eq!(number(&line, "/logout_failures"), 0.0, "{line}");
    assert!(number(&line, "/close_latency/p99_ms") > 0.0, "{line}");

    // replay: every envelope accepted once, every replay refused as replayed.
    let args = [
        "replay",
        "--servers",
        &servers,
        "-c",
        "2",
        "--attempts",
        "40",
    ];
    let line = bench(&args);
    assert_eq!(number(&line, "/accepted_on_first"), 40.0, "{line}");
    assert_eq!(number(&line, "/replays_accepted"), 0.0, "{line}");
    assert_eq!(
        number(&line, "/replays_refused_as_replayed"),
        40.0,
        "{line}"
    );
}

/// `signet-bench SCENARIO` against Signet at `url`, then `peer`, with 20 connections.
fn with_peer<'a>(scenario: &'a str, url: &'a str, peer: &'a str) -> Vec<&'a str> {
    vec![scenario, "--url", url, "-c", CONNECTIONS, "--peer", peer]
}

/// The figures of peer `name` in a JSON line, checked to be a run (not an error) of that peer
/// with its configuration stated.
fn peer_figures(name: &str, line: &Value) -> Value {
    let peer = line["peers"][name].clone();
    assert!(peer.get("error").is_none(), "{line}");
    assert_eq!(peer["target"], name, "{line}");
    assert!(peer["configuration"].is_string(), "{line}");
    peer
}

/// The peers (`--peer`): Node's socket.io peer (clients/bench/peers/socketio-node, installed by
/// scripts/test.sh with `npm ci`) started as a child process after the Signet run and driven by
/// the generator's Socket.IO client through connect, idle, echo and broadcast, each reported
/// under `peers` in the same JSON line; a peer that cannot start is reported, not hidden, and
/// Signet's figures stay.
fn the_socketio_node_peer_runs_beside_signet() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let signet = format!("http://{}", start_signet(data_dir.path()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let peer_dir = root.join("clients/bench/peers/socketio-node");
    assert!(
        peer_dir.join("node_modules/socket.io").is_dir(),
        "run `npm ci --prefix clients/bench/peers/socketio-node` first (scripts/test.sh does)"
    );
    let peer = format!(
        "socketio-node=node {}",
        peer_dir.join("server.mjs").display()
    );
    let short = ["--warmup", "200ms", "--duration", "1s"];
    let line = bench(&with_peer("connect", &signet, &peer));
    let socketio = peer_figures("socketio-node", &line);
    assert_eq!(number(&socketio, "/established"), 20.0, "{line}");
    assert!(number(&socketio, "/signet_over_peer") > 0.0, "{line}");

    let mut args = with_peer("idle", &signet, &peer);
    args.extend(["--settle", "100ms", "--hold", "500ms"]);
    let socketio = peer_figures("socketio-node", &bench(&args));
    assert_eq!(number(&socketio, "/held"), 20.0, "{socketio}");
    // The peer's own process was measured.
    assert!(
        number(&socketio, "/server_rss_kib/after") > 0.0,
        "{socketio}"
    );

    let mut args = with_peer("echo", &signet, &peer);
    args.extend(["--mode", "plain"]);
    args.extend(short);
    let line = bench(&args);
    assert!(number(&line, "/plain/round_trips") > 0.0, "{line}");
    let socketio = peer_figures("socketio-node", &line);
    assert!(number(&socketio, "/plain/round_trips") > 0.0, "{line}");
    assert_eq!(number(&socketio, "/plain/errors"), 0.0, "{line}");
    assert!(socketio.get("signed").is_none(), "{line}");

    let mut args = with_peer("broadcast", &signet, &peer);
    args.extend(short);
    let socketio = peer_figures("socketio-node", &bench(&args));
    assert!(
        number(&socketio, "/deliveries_in_window") > 0.0,
        "{socketio}"
    );
    assert_eq!(number(&socketio, "/receivers_lost"), 0.0, "{socketio}");
    assert_eq!(
        number(&socketio, "/delivered"),
        number(&socketio, "/expected_deliveries"),
        "{socketio}"
    );

    // A peer that cannot start: reported under its name, Signet's run still counts.
    let missing = "socketioxide=/nonexistent/signet-peer-socketioxide";
    let line = bench(&["connect", "--url", &signet, "-c", "2", "--peer", missing]);
    assert_eq!(number(&line, "/established"), 2.0, "{line}");
    let error = line["peers"]["socketioxide"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("cannot start"), "{line}");
}

/// The SignalR peer: aiosignalr (clients/bench/peers/aiosignalr, installed by scripts/test.sh into
/// target/peers/aiosignalr-venv) driven by the very same SignalR client and scenarios as Signet,
/// through negotiate (which aiohttp answers in chunks), the upgrade and the handshake.
fn the_aiosignalr_peer_runs_the_signalr_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // ./scripts/test.sh sets SIGNET_AIOSIGNALR_PYTHON; a venv it made earlier serves `cargo test`.
    let venv = root.join("target/peers/aiosignalr-venv/bin/python");
    let python = std::env::var("SIGNET_AIOSIGNALR_PYTHON")
        .ok()
        .or_else(|| venv.is_file().then(|| venv.display().to_string()))
        .unwrap_or_else(|| {
            panic!(
                "SIGNET_AIOSIGNALR_PYTHON is not set: run ./scripts/test.sh, which installs \
                 clients/bench/peers/aiosignalr/requirements.txt into target/peers/aiosignalr-venv"
            )
        });
    let server = root.join("clients/bench/peers/aiosignalr/server.py");
    let peer = format!("aiosignalr={python} {}", server.display());
    let data_dir = tempfile::tempdir().expect("temp dir");
    let signet = format!("http://{}", start_signet(data_dir.path()));
    let short = ["--warmup", "200ms", "--duration", "1s"];

    let mut args = with_peer("echo", &signet, &peer);
    args.extend(["--mode", "plain"]);
    args.extend(short);
    let line = bench(&args);
    let aiosignalr = &peer_figures("aiosignalr", &line);
    assert!(number(aiosignalr, "/plain/round_trips") > 0.0, "{line}");
    assert_eq!(number(aiosignalr, "/plain/errors"), 0.0, "{line}");

    let mut args = with_peer("broadcast", &signet, &peer);
    args.extend(short);
    let line = bench(&args);
    let aiosignalr = &peer_figures("aiosignalr", &line);
    assert!(number(aiosignalr, "/deliveries_in_window") > 0.0, "{line}");
    assert_eq!(number(aiosignalr, "/receivers_lost"), 0.0, "{line}");
    assert_eq!(
        number(aiosignalr, "/delivered"),
        number(aiosignalr, "/expected_deliveries"),
        "{line}"
    );
}

pub const TESTS: &[Test] = &[
    (
        "bench::every_scenario_runs_against_signet_and_the_baseline",
        every_scenario_runs_against_signet_and_the_baseline,
    ),
    (
        "bench::the_many_node_modes_run_against_one_server_named_twice",
        the_many_node_modes_run_against_one_server_named_twice,
    ),
    (
        "bench::the_socketio_node_peer_runs_beside_signet",
        the_socketio_node_peer_runs_beside_signet,
    ),
    (
        "bench::the_aiosignalr_peer_runs_the_signalr_scenarios",
        the_aiosignalr_peer_runs_the_signalr_scenarios,
    ),
];
