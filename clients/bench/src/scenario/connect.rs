//! `connect`: how fast authenticated connections open (negotiate, upgrade, handshake), and how
//! many fail. The connections stay open until all attempts are done, then close. With
//! `--skip-negotiation` a SignalR connection is one upgrade and the handshake (as an official
//! client with `skipNegotiation: true`): the difference to the default run is what negotiate's
//! extra request costs.

use super::{close_all, round, Outcome, Target, TargetKind};
use crate::system::CpuMeter;
use serde_json::json;

pub async fn run(target: &Target, connections: usize) -> Result<Outcome, String> {
    let identities = target.identities("user", connections, &["user"])?;
    let server = CpuMeter::of(&target.server_pids);
    let generator = CpuMeter::start(std::process::id());
    let established = target.establish(identities).await;
    let server_cpu = server.and_then(|meter| meter.stop());
    let generator_cpu = generator.and_then(|meter| meter.stop());
    let rate = established.rate();
    // Only a SignalR client negotiates; the baseline and Socket.IO connect the same either way.
    let speaks_signalr = match target.kind {
        TargetKind::Signet => true,
        TargetKind::Peer(peer) => peer.speaks_signalr(),
        TargetKind::Baseline => false,
    };
    let skipped = speaks_signalr && target.skip_negotiation;
    let summary = format!(
        "{} of {connections} connected{} in {:.2} s: {:.0} connects/s, {} failures; connect p50 {:.1} ms, p99 {:.1} ms",
        established.connections.len(),
        if skipped { " without negotiate" } else { "" },
        established.elapsed.as_secs_f64(),
        rate,
        established.failures,
        established.latency.p50_ms,
        established.latency.p99_ms,
    );
    let mut figures = established.figures();
    figures["attempted"] = json!(connections);
    if speaks_signalr {
        figures["skip_negotiation"] = json!(target.skip_negotiation);
    }
    figures["server_cpu"] = json!(server_cpu);
    figures["generator_cpu"] = json!(generator_cpu);
    close_all(
        established
            .connections
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
    )
    .await;
    Ok(Outcome {
        figures,
        headline: Some(("connects_per_s", round(rate, 1))),
        summary,
    })
}
