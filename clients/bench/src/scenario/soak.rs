//! `soak`: connection churn for a long time, to show that the server gives back what it took.
//!
//! Each of N slots connects, holds its connection for a random time, and connects again with a
//! fresh token, until the run ends. Tokens are minted with a short lifetime (`--token-ttl`), so
//! many connections are closed by the server when their token expires; one slot in ten belongs
//! to a real user (`--revocable name=id`) whom an admin revokes every `--revoke-every`, closing
//! their connections; one connection in `--garbage-every` sends a malformed frame; and a side
//! task sends malformed HTTP requests. `scripts/soak.sh` samples the server's memory, files,
//! threads and connections around a run and checks they come back.

use super::{Outcome, Target, CONNECT_TIMEOUT};
use crate::client::{api_request, bounded, Client, ClientError};
use crate::credentials::Credentials;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How often a held connection sends its keep-alive (the SignalR clients' default).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Distinct outcome texts kept; the rest are counted as `other`.
const MAX_OUTCOME_KINDS: usize = 32;

pub struct SoakOptions {
    pub connections: usize,
    pub duration: Duration,
    /// Lifetime of each minted token; connections are held between a quarter of it and twice it.
    pub token_ttl: Duration,
    pub revoke_every: Duration,
    /// Real users (`username`, `id`) whose tokens one slot in ten carries and who get revoked.
    pub revocable: Vec<(String, String)>,
    /// One connection in this many sends a malformed frame (0: none).
    pub garbage_every: u64,
    /// Pause between malformed HTTP requests of the side task (0: none).
    pub http_garbage_interval: Duration,
}

#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    garbage_frames: AtomicU64,
    http_garbage: AtomicU64,
    revokes_ok: AtomicU64,
    revokes_failed: AtomicU64,
    /// How connections ended (or failed to open), by kind.
    outcomes: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn count(&self, kind: &str) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        let key = if outcomes.len() < MAX_OUTCOME_KINDS || outcomes.contains_key(kind) {
            kind.to_string()
        } else {
            "other".to_string()
        };
        *outcomes.entry(key).or_default() += 1;
    }
}

/// What ended a connection, in a few words.
fn ending(error: &ClientError) -> String {
    match error {
        ClientError::Closed(Some(text)) if text.starts_with("Authentication expired") => {
            "closed: token expired".into()
        }
        ClientError::Closed(Some(text)) if text.starts_with("Authentication revoked") => {
            "closed: revoked".into()
        }
        ClientError::Closed(Some(text)) => {
            format!("closed: {}", text.chars().take(48).collect::<String>())
        }
        ClientError::Closed(None) => "closed without reason".into(),
        other => format!(
            "error: {}",
            other.to_string().chars().take(48).collect::<String>()
        ),
    }
}

/// A small xorshift generator: hold times and garbage choices need no quality, only spread.
struct Spread(u64);

impl Spread {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis().max(1) as u64;
        low + Duration::from_millis(self.next() % span)
    }
}

/// Malformed frames a broken or hostile client might send after a good handshake.
const GARBAGE_FRAMES: [&[u8]; 4] = [
    b"{\"type\":1,\"target\":\x1e",
    b"\x1e\x1e\x1e",
    b"{\"type\":99}\x1e",
    b"\xff\xff\xff\xff\x0f\x00garbage",
];

/// Malformed HTTP requests: bad framing, bad upgrade, not HTTP at all.
const GARBAGE_REQUESTS: [&[u8]; 4] = [
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    b"POST /hubs/home/negotiate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /hubs/home?id=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\n\r\n",
];

pub async fn run(target: &Target, options: &SoakOptions) -> Result<Outcome, String> {
    let credentials = target
        .credentials
        .clone()
        .ok_or("soak needs --jwt-secret (or SIGNET__JWT__SECRET)")?;
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let started = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..options.connections {
        let (target, credentials, tally, stop) = (
            target.clone(),
            credentials.clone(),
            tally.clone(),
            stop.clone(),
        );
        let revocable = options.revocable.clone();
        let (connections, ttl, garbage_every) = (
            options.connections,
            options.token_ttl,
            options.garbage_every,
        );
        tasks.spawn(async move {
            let mut spread = Spread(0x9e37_79b9_7f4a_7c15 ^ (slot as u64 + 1).wrapping_mul(0x2545_f491));
            // Slots start spread over the first few seconds instead of all at once.
            let start = Duration::from_millis(spread.next() % 5_000);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(start) => {}
            }
            let mut round = 0usize;
            while !stop.is_cancelled() {
                round += 1;
                let sub = match revocable.get(slot / 10 % revocable.len().max(1)) {
                    Some((_, id)) if slot % 10 == 0 => id.clone(),
                    _ => format!("soak-user-{}", slot % 1000),
                };
                let session = format!("soak-{slot}-{round}");
                let Ok(identity) = credentials.identity_of(sub, session, &["user"]) else {
                    tally.count("error: cannot mint a token");
                    return;
                };
                // A new number per round spreads the connections over the source addresses.
                let index = slot + round * connections;
                let opened = tokio::select! {
                    _ = stop.cancelled() => return,
                    opened = bounded(CONNECT_TIMEOUT, target.open(index, Some(&identity))) => opened,
                };
                let mut client = match opened {
                    Ok(Client::Hub(client)) => client,
                    Ok(other) => {
                        other.close().await;
                        return;
                    }
                    Err(error) => {
                        tally.count(&format!("refused: {}", ending(&error)));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                tally.opened.fetch_add(1, Ordering::Relaxed);
                if garbage_every > 0 && spread.next().is_multiple_of(garbage_every) {
                    let frame = GARBAGE_FRAMES[(spread.next() % 4) as usize];
                    tally.garbage_frames.fetch_add(1, Ordering::Relaxed);
                    if client.send_raw(frame.to_vec(), spread.next().is_multiple_of(2)).await.is_err() {
                        tally.count("error: garbage frame not sent");
                        continue;
                    }
                }
                let hold = spread.between(ttl / 4, ttl * 2);
                let until = tokio::time::Instant::now() + hold;
                let mut next_ping = tokio::time::Instant::now() + KEEP_ALIVE;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => {
                            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                            return;
                        }
                        _ = tokio::time::sleep_until(until) => {
                            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
                            tally.count("closed by the client");
                            break;
                        }
                        _ = tokio::time::sleep_until(next_ping) => {
                            next_ping += KEEP_ALIVE;
                            if let Err(error) = client.ping().await {
                                tally.count(&ending(&error));
                                break;
                            }
                        }
                        received = client.recv() => if let Err(error) = received {
                            tally.count(&ending(&error));
                            break;
                        }
                    }
                }
            }
        });
    }

    if !options.revocable.is_empty() && !options.revoke_every.is_zero() {
        let (target, credentials, tally, stop) = (
            target.clone(),
            credentials.clone(),
            tally.clone(),
            stop.clone(),
        );
        let (users, every) = (options.revocable.clone(), options.revoke_every);
        tasks.spawn(async move {
            for (turn, (name, _)) in users.iter().cycle().enumerate() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let revoked = revoke(&target, &credentials, name, turn).await;
                let counter = if revoked {
                    &tally.revokes_ok
                } else {
                    &tally.revokes_failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    if !options.http_garbage_interval.is_zero() {
        let (target, tally, stop) = (target.clone(), tally.clone(), stop.clone());
        let every = options.http_garbage_interval;
        tasks.spawn(async move {
            for request in GARBAGE_REQUESTS.iter().cycle() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let sent = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut stream = tokio::net::TcpStream::connect(target.endpoint.addr).await?;
                    stream.write_all(request).await?;
                    let mut sink = [0u8; 1024];
                    while stream.read(&mut sink).await? > 0 {}
                    std::io::Result::Ok(())
                })
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    tally.count("http garbage: no clean answer");
                }
                tally.http_garbage.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    tokio::time::sleep(options.duration).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();

    let opened = tally.opened.load(Ordering::Relaxed);
    let outcomes: Map<String, Value> = tally
        .outcomes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(kind, count)| (kind.clone(), json!(count)))
        .collect();
    let figures = json!({
        "connections": options.connections,
        "duration_s": super::round(elapsed, 1),
        "opened": opened,
        "opened_per_s": super::round(opened as f64 / elapsed.max(1e-9), 1),
        "garbage_frames": tally.garbage_frames.load(Ordering::Relaxed),
        "http_garbage_requests": tally.http_garbage.load(Ordering::Relaxed),
        "revokes": {
            "ok": tally.revokes_ok.load(Ordering::Relaxed),
            "failed": tally.revokes_failed.load(Ordering::Relaxed),
        },
        "outcomes": outcomes,
    });
    let summary = format!(
        "{opened} connections opened over {:.0} s ({:.0}/s) by {} slots",
        elapsed,
        opened as f64 / elapsed.max(1e-9),
        options.connections
    );
    Ok(Outcome {
        figures,
        headline: Some(("opened_per_s", opened as f64 / elapsed.max(1e-9))),
        summary,
    })
}

/// `POST /api/admin/users/{name}/revoke` with a freshly minted admin token.
async fn revoke(target: &Target, credentials: &Credentials, name: &str, turn: usize) -> bool {
    let Ok(admin) = credentials.identity_of(
        "soak-admin".into(),
        format!("soak-admin-{turn}"),
        &["admin"],
    ) else {
        return false;
    };
    let path = format!("/api/admin/users/{name}/revoke");
    matches!(
        api_request(&target.endpoint, "POST", &path, Some(&admin.token), None).await,
        Ok((204, _))
    )
}
