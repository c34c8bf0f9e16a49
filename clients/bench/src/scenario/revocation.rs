//! `revocation`: how long a revocation made on one node takes to close the user's connection on
//! another. Each of N users has a connection on another server (`--servers`; with one server, on
//! it); the user logs out on the first server (`POST /api/auth/logout` with the same token, which
//! revokes its token and session), and the time from sending that request until the other node
//! closes the connection is recorded. Across nodes this needs the nodes to share revocations
//! (a shared PostgreSQL store); a connection still open after `--close-timeout` counts as
//! `not_closed`.

use super::{remember, round, Outcome, Target, TargetKind, CALL_TIMEOUT};
use crate::client::{api_request, bounded, Client};
use crate::credentials::Identity;
use crate::stats::Latencies;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub struct RevocationOptions {
    pub users: usize,
    /// Logouts in flight at once.
    pub concurrency: usize,
    /// How long a connection may stay open after its logout.
    pub close_timeout: Duration,
}

#[derive(Default)]
struct Tally {
    close_latency: Latencies,
    logout_latency: Latencies,
    closed: AtomicU64,
    closed_as_revoked: AtomicU64,
    not_closed: AtomicU64,
    logout_failures: AtomicU64,
    first_error: Mutex<Option<String>>,
}

pub async fn run(target: &Target, options: &RevocationOptions) -> Result<Outcome, String> {
    if target.kind == TargetKind::Baseline {
        return Err("revocation needs Signet (the baseline has no tokens)".into());
    }
    let identities = target.identities("revoke", options.users, &["user"])?;
    let established = target.remote().establish(identities).await;
    if established.connections.is_empty() {
        return Err(format!(
            "no connection opened: {}",
            established.first_error.unwrap_or_default()
        ));
    }
    let tally = Arc::new(Tally::default());
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (client, identity)) in established.connections.into_iter().enumerate() {
        let Some(identity) = identity else { continue };
        let (target, tally, permits) = (target.clone(), tally.clone(), permits.clone());
        let close_timeout = options.close_timeout;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            revoke_one(&target, index, client, identity, close_timeout, &tally).await
        });
    }
    let mut still_open = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        still_open.extend(joined.ok().flatten());
    }
    super::close_all(still_open).await;
    Ok(outcome(&tally, options.users, established.failures))
}

/// Logs `identity` out on the first server and waits for `client`, on another, to be closed.
/// Gives the client back when it was not.
async fn revoke_one(
    target: &Target,
    index: usize,
    mut client: Client,
    identity: Identity,
    close_timeout: Duration,
    tally: &Tally,
) -> Option<Client> {
    let empty = json!({});
    let began = Instant::now();
    let logout = async {
        let request = api_request(
            &target.endpoint,
            "POST",
            "/api/auth/logout",
            Some(&identity.token),
            Some(&empty),
        );
        let answer = bounded(CALL_TIMEOUT, request).await;
        (answer, began.elapsed())
    };
    let closed = tokio::time::timeout(close_timeout, async {
        loop {
            if let Err(reason) = client.drain_one().await {
                return (reason.to_string(), began.elapsed());
            }
        }
    });
    let ((answer, answered_after), closed) = tokio::join!(logout, closed);
    match answer {
        Ok((204, _)) => tally.logout_latency.record(index, answered_after),
        Ok((status, body)) => {
            tally.logout_failures.fetch_add(1, Ordering::Relaxed);
            remember(
                &tally.first_error,
                format!("logout answered {status}: {body}"),
            );
        }
        Err(err) => {
            tally.logout_failures.fetch_add(1, Ordering::Relaxed);
            remember(&tally.first_error, format!("logout: {err}"));
        }
    }
    match closed {
        Ok((reason, after)) => {
            tally.closed.fetch_add(1, Ordering::Relaxed);
            tally.close_latency.record(index, after);
            if reason.contains("revoked") {
                tally.closed_as_revoked.fetch_add(1, Ordering::Relaxed);
            } else {
                remember(
                    &tally.first_error,
                    format!("closed for another reason: {reason}"),
                );
            }
            None
        }
        Err(_) => {
            tally.not_closed.fetch_add(1, Ordering::Relaxed);
            Some(client)
        }
    }
}

fn outcome(tally: &Tally, users: usize, connect_failures: usize) -> Outcome {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let latency = tally.close_latency.summary();
    let first_error = tally.first_error.lock().ok().and_then(|e| e.clone());
    let figures = json!({
        "users": users,
        "connect_failures": connect_failures,
        "closed": load(&tally.closed),
        "closed_as_revoked": load(&tally.closed_as_revoked),
        "not_closed": load(&tally.not_closed),
        "logout_failures": load(&tally.logout_failures),
        "first_error": first_error,
        "close_latency": latency,
        "logout_latency": tally.logout_latency.summary(),
    });
    let summary = format!(
        "{} of {users} connections closed after their logout on the first server ({} as revoked), {} not closed; close p50 {:.1} ms, p99 {:.1} ms",
        load(&tally.closed),
        load(&tally.closed_as_revoked),
        load(&tally.not_closed),
        latency.p50_ms,
        latency.p99_ms,
    );
    Outcome {
        figures,
        headline: Some(("close_p99_ms", round(latency.p99_ms, 3))),
        summary,
    }
}
