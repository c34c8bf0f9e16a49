//! `replay`: whether a signed envelope accepted on one node can be replayed on another. Each
//! session has a connection on the first server and one on another (`--servers`; with one server
//! both are on it); each envelope is sent as `EchoSigned` on the first, and once accepted there,
//! the very same envelope is sent on the second. The cluster's shared nonce store must refuse
//! every one of them (`replayed_nonce`): `replays_accepted` is the figure, and its goal is 0.

use super::echo::{hub_call, signed_echo};
use super::{remember, round, Outcome, Target, TargetKind, CALL_TIMEOUT};
use crate::client::{bounded, Client, HubClient};
use crate::credentials::Identity;
use serde_json::json;
use signet_protocol::envelope::MessageKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ReplayOptions {
    /// Sessions, each with a connection on both servers.
    pub sessions: usize,
    /// Envelopes sent in all.
    pub attempts: u64,
    pub envelope_lifetime: Duration,
}

/// What the sessions count together.
#[derive(Default)]
struct Tally {
    accepted_first: AtomicU64,
    refused_first: AtomicU64,
    replays_accepted: AtomicU64,
    replays_refused: AtomicU64,
    refused_otherwise: AtomicU64,
    connections_lost: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// One session's two connections and its message key.
struct Pair {
    first: HubClient,
    second: HubClient,
    key: MessageKey,
}

pub async fn run(target: &Target, options: &ReplayOptions) -> Result<Outcome, String> {
    if target.kind == TargetKind::Baseline {
        return Err("replay needs Signet (the baseline has no signed calls)".into());
    }
    if !target
        .credentials
        .as_ref()
        .is_some_and(|c| c.has_envelope_secret())
    {
        return Err("replay needs --envelope-secret (or SIGNET__ENVELOPE__SECRET)".into());
    }
    let pairs = connect_pairs(target, options.sessions.max(1)).await?;
    let tally = Arc::new(Tally::default());
    let hub_path: Arc<str> = Arc::from(target.endpoint.path.as_str());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let count = pairs.len() as u64;
    for (index, pair) in pairs.into_iter().enumerate() {
        // Spread the attempts evenly; the first sessions take the remainder.
        let share = options.attempts / count + u64::from((index as u64) < options.attempts % count);
        let (tally, hub_path) = (tally.clone(), hub_path.clone());
        let lifetime = options.envelope_lifetime;
        tasks.spawn(async move { replay_pair(pair, share, &hub_path, lifetime, &tally).await });
    }
    let mut closing = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(pair) = joined {
            closing.extend(pair.map(|p| [Client::Hub(p.first), Client::Hub(p.second)]));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    super::close_all(closing.into_iter().flatten().collect()).await;
    Ok(outcome(&tally, count, options.attempts, elapsed))
}

fn outcome(tally: &Tally, sessions: u64, attempts: u64, elapsed: f64) -> Outcome {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let accepted = load(&tally.accepted_first);
    let replays_accepted = load(&tally.replays_accepted);
    let first_error = tally.first_error.lock().ok().and_then(|e| e.clone());
    let figures = json!({
        "sessions": sessions,
        "attempts": attempts,
        "accepted_on_first": accepted,
        "refused_on_first": load(&tally.refused_first),
        "replays_sent": accepted,
        "replays_accepted": replays_accepted,
        "replays_refused_as_replayed": load(&tally.replays_refused),
        "replays_refused_otherwise": load(&tally.refused_otherwise),
        "connections_lost": load(&tally.connections_lost),
        "first_error": first_error,
        "elapsed_s": round(elapsed, 3),
        "pairs_per_s": round(accepted as f64 / elapsed.max(1e-9), 1),
    });
    let summary = format!(
        "{accepted} of {attempts} envelopes accepted on the first server; {replays_accepted} of their replays accepted on the other, {} refused as replayed, {} refused otherwise",
        load(&tally.replays_refused),
        load(&tally.refused_otherwise),
    );
    Outcome {
        figures,
        headline: None,
        summary,
    }
}

/// One connection per session on the first server and one on another, with the same token
/// (so the same message key on both).
async fn connect_pairs(target: &Target, sessions: usize) -> Result<Vec<Pair>, String> {
    let on_first = target
        .senders()
        .establish(target.identities("replay", sessions, &["user"])?)
        .await;
    let on_second = target
        .remote()
        .establish_from(sessions, target.identities("replay", sessions, &["user"])?)
        .await;
    let mut seconds: HashMap<String, HubClient> = on_second
        .connections
        .into_iter()
        .filter_map(|(client, identity)| hub_of(client, identity).map(|(h, i)| (i.session, h)))
        .collect();
    let pairs: Vec<Pair> = on_first
        .connections
        .into_iter()
        .filter_map(|(client, identity)| {
            let (first, identity) = hub_of(client, identity)?;
            let key = identity.message_key?;
            let second = seconds.remove(&identity.session)?;
            Some(Pair { first, second, key })
        })
        .collect();
    if pairs.is_empty() {
        let error = on_first.first_error.or(on_second.first_error);
        return Err(format!("no session connected on both servers: {error:?}"));
    }
    Ok(pairs)
}

fn hub_of(client: Client, identity: Option<Identity>) -> Option<(HubClient, Identity)> {
    match (client, identity) {
        (Client::Hub(hub), Some(identity)) => Some((hub, identity)),
        _ => None,
    }
}

/// `share` envelopes, each accepted on the first connection, then replayed on the second.
/// Gives the pair back unless a connection was lost.
async fn replay_pair(
    mut pair: Pair,
    share: u64,
    hub_path: &str,
    lifetime: Duration,
    tally: &Tally,
) -> Option<Pair> {
    for seq in 0..share {
        let envelope = signed_echo(&pair.key, hub_path, seq, lifetime);
        let id = seq.to_string();
        let call = hub_call(&mut pair.first, &id, "EchoSigned", envelope.clone());
        match bounded(CALL_TIMEOUT, call).await {
            Ok(None) => tally.accepted_first.fetch_add(1, Ordering::Relaxed),
            Ok(Some(error)) => {
                tally.refused_first.fetch_add(1, Ordering::Relaxed);
                remember(
                    &tally.first_error,
                    format!("refused on the first server: {error}"),
                );
                continue;
            }
            Err(err) => return lost(tally, err.to_string()),
        };
        let replay = hub_call(&mut pair.second, &id, "EchoSigned", envelope);
        match bounded(CALL_TIMEOUT, replay).await {
            Ok(None) => tally.replays_accepted.fetch_add(1, Ordering::Relaxed),
            Ok(Some(error)) if error.contains("replayed_nonce") => {
                tally.replays_refused.fetch_add(1, Ordering::Relaxed)
            }
            Ok(Some(error)) => {
                remember(
                    &tally.first_error,
                    format!("replay refused otherwise: {error}"),
                );
                tally.refused_otherwise.fetch_add(1, Ordering::Relaxed)
            }
            Err(err) => return lost(tally, err.to_string()),
        };
    }
    Some(pair)
}

fn lost(tally: &Tally, error: String) -> Option<Pair> {
    tally.connections_lost.fetch_add(1, Ordering::Relaxed);
    remember(&tally.first_error, format!("connection lost: {error}"));
    None
}
