//! `idle`: hold N authenticated connections that only keep alive (a SignalR Ping every 15 s, as
//! the official clients send), and read what they cost the server: resident memory per
//! connection (`VmRSS` after, minus before the connections opened) and CPU while idle.

use super::{round, Outcome, Target};
use crate::system::{rss_kib, total_rss_kib, CpuMeter};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often an idle client sends its keep-alive (the SignalR clients' default).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub struct IdleOptions {
    pub connections: usize,
    /// Wait after the last connection opened before measuring (allocations settle).
    pub settle: Duration,
    /// How long the idle connections are held and the server's CPU measured.
    pub hold: Duration,
}

pub async fn run(target: &Target, options: &IdleOptions) -> Result<Outcome, String> {
    let identities = target.identities("user", options.connections, &["user"])?;
    let pids = &target.server_pids;
    let rss_before = total_rss_kib(pids);
    let established = target.establish(identities).await;
    let opened = established.connections.len();

    let stop = CancellationToken::new();
    let alive = Arc::new(AtomicUsize::new(0));
    let mut holders = tokio::task::JoinSet::new();
    for (index, (mut client, _)) in established.connections.into_iter().enumerate() {
        let stop = stop.clone();
        let alive = alive.clone();
        alive.fetch_add(1, Ordering::Relaxed);
        // Spread the keep-alives over the interval instead of sending them all at once.
        let offset = KEEP_ALIVE.mul_f64((index % 1000) as f64 / 1000.0);
        holders.spawn(async move {
            // The first keep-alive goes at once: the first connections have been silent while
            // the others opened, which takes tens of seconds on a slow server (a server drops a
            // client silent for 30 s). Then one every 15 s, at this connection's offset.
            let start = tokio::time::Instant::now();
            let mut next_ping = start;
            let mut pings = 0u32;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(next_ping) => {
                        next_ping = start + offset + KEEP_ALIVE * pings;
                        pings += 1;
                        if client.keep_alive().await.is_err() { break; }
                    }
                    received = client.drain_one() => if received.is_err() { break },
                }
            }
            alive.fetch_sub(1, Ordering::Relaxed);
            client
        });
    }

    tokio::time::sleep(options.settle).await;
    let rss_settled = total_rss_kib(pids);
    let server = CpuMeter::of(pids);
    let generator = CpuMeter::start(std::process::id());
    tokio::time::sleep(options.hold).await;
    let server_cpu = server.and_then(|meter| meter.stop());
    let generator_cpu = generator.and_then(|meter| meter.stop());
    let rss_after = total_rss_kib(pids);
    let held = alive.load(Ordering::Relaxed);

    stop.cancel();
    let mut clients = Vec::with_capacity(opened);
    while let Some(joined) = holders.join_next().await {
        if let Ok(client) = joined {
            clients.push(client);
        }
    }
    super::close_all(clients).await;

    let per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if held > 0 => Some(round(
            (after as f64 - before as f64) * 1024.0 / held as f64,
            0,
        )),
        _ => None,
    };
    let mut summary = format!(
        "held {held} of {} idle connections for {:.0} s",
        options.connections,
        options.hold.as_secs_f64()
    );
    if let Some(bytes) = per_connection {
        summary.push_str(&format!(
            "; server RSS {:.1} KiB per connection",
            bytes / 1024.0
        ));
    }
    if let Some(cpu) = server_cpu {
        summary.push_str(&format!(
            ", server CPU {:.2}% of a core while idle",
            cpu.pct_of_core
        ));
    }
    let mut figures = established_figures(established.failures, &established.first_error);
    figures["connect"] = json!({
        "established": opened,
        "elapsed_s": round(established.elapsed.as_secs_f64(), 3),
        "connects_per_s": round(opened as f64 / established.elapsed.as_secs_f64().max(1e-9), 1),
        "connect_latency": established.latency,
    });
    figures["held"] = json!(held);
    figures["hold_s"] = json!(options.hold.as_secs_f64());
    figures["server_rss_kib"] = json!({
        "before": rss_before, "settled": rss_settled, "after": rss_after,
    });
    figures["server_bytes_per_connection"] = json!(per_connection);
    figures["server_cpu_idle"] = json!(server_cpu);
    figures["generator_cpu"] = json!(generator_cpu);
    figures["generator_rss_kib"] = json!(rss_kib(std::process::id()));
    Ok(Outcome {
        figures,
        headline: per_connection.map(|bytes| ("server_bytes_per_connection", bytes)),
        summary,
    })
}

fn established_figures(failures: usize, first_error: &Option<String>) -> serde_json::Value {
    json!({ "failures": failures, "first_error": first_error })
}
