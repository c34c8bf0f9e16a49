//! `broadcast`: one admin broadcasting to N connections; deliveries per second and delivery
//! latency. The admin calls `BroadcastMessage(text)` (on the baseline: sends a `!` frame; on a
//! Socket.IO peer: emits `broadcast`, which the peer re-emits to all as `message`) with
//! the send time embedded in the text; every receiver measures the time from that stamp to its
//! arrival. The admin pipelines its calls, and flow control keeps the run sustainable: broadcast
//! `k` is sent only while fewer than `window` calls await their completion and once
//! `(k - window) x receivers` deliveries have arrived, so no receiver queue fills unless one
//! receiver falls far behind the others (the server then closes it, which is counted). `--rate`
//! caps the broadcasts per second too, for the latency at a given load.

use super::{measure_cpu, read_record, round, Outcome, Target, Window, CALL_TIMEOUT};
use crate::baseline::BROADCAST_MARKER;
use crate::client::{Client, ClientError};
use crate::socketio::Incoming;
use crate::stats::Latencies;
use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use signet_protocol::protocol::{CompletionResult, HubMessage, HubProtocol, MessageType};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long after the window the run waits for deliveries still in flight.
const DRAIN: Duration = Duration::from_secs(5);
/// How far behind its schedule a paced admin may catch up in a burst. A timer wakes about once a
/// millisecond, so rates above 1,000/s send several broadcasts per wake-up; a longer stall
/// (a busy machine) is not caught up, the schedule starts again from now.
const CATCH_UP: Duration = Duration::from_millis(5);

pub struct BroadcastOptions {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Broadcasts per second; `None` sends as fast as flow control allows.
    pub rate: Option<f64>,
    /// Broadcasts allowed in flight (sent but not yet delivered everywhere, on average).
    pub window: u64,
    /// Padding added to each broadcast text.
    pub payload_bytes: usize,
}

pub async fn run(target: &Target, options: &BroadcastOptions) -> Result<Outcome, String> {
    let identities = target.identities("user", options.connections, &["user"])?;
    let admin_identity = target.identities("admin", 1, &["admin", "user"])?;
    // Across nodes (`--spread across`) the admin is on the first server, the receivers elsewhere.
    let receivers = target.receivers().establish(identities).await;
    let mut admin = target
        .senders()
        .establish_from(options.connections, admin_identity)
        .await;
    let Some((mut admin_client, _)) = admin.connections.pop() else {
        return Err(format!(
            "the admin could not connect: {}",
            admin.first_error.unwrap_or_default()
        ));
    };
    let receiver_count = receivers.connections.len();
    if receiver_count == 0 {
        return Err(format!(
            "no receiver connected: {}",
            receivers.first_error.unwrap_or_default()
        ));
    }

    let clock = Instant::now();
    let window = Window::after(options.warmup, options.duration);
    let server_cpu = measure_cpu(target.server_pids.clone(), window);
    let generator_cpu = measure_cpu(vec![std::process::id()], window);
    let stop = CancellationToken::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let in_window = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicUsize::new(receiver_count));
    let latencies = Arc::new(Latencies::new());
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (mut client, _)) in receivers.connections.into_iter().enumerate() {
        let (stop, delivered, in_window, alive, latencies) = (
            stop.clone(),
            delivered.clone(),
            in_window.clone(),
            alive.clone(),
            latencies.clone(),
        );
        tasks.spawn(async move {
            loop {
                let stamp = tokio::select! {
                    _ = stop.cancelled() => break,
                    stamp = next_broadcast(&mut client) => stamp,
                };
                match stamp {
                    Ok(Some(sent_us)) => {
                        let now = Instant::now();
                        let now_us = now.duration_since(clock).as_micros() as u64;
                        delivered.fetch_add(1, Ordering::Relaxed);
                        if window.contains(now) {
                            in_window.fetch_add(1, Ordering::Relaxed);
                            let latency = Duration::from_micros(now_us.saturating_sub(sent_us));
                            latencies.record(index, latency);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => {
                        alive.fetch_sub(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
            Some(client)
        });
    }

    let padding = "x".repeat(options.payload_bytes);
    let pacing = options
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let call_latencies = Latencies::new();
    let mut next_at = Instant::now();
    let mut outstanding: HashMap<u64, Instant> = HashMap::new();
    let mut sent = 0u64;
    let mut sent_in_window = 0u64;
    let mut admin_error = None;
    // The admin pipelines: up to `window` calls outstanding, their completions read as they
    // come, so the rate is bounded by the fan-out's capacity rather than one call's round trip.
    let admin_deadline = window.end + CALL_TIMEOUT;
    loop {
        let now = Instant::now();
        let sending = now < window.end;
        if (!sending && outstanding.is_empty()) || now >= admin_deadline {
            break;
        }
        let owed = sent.saturating_sub(options.window) * alive.load(Ordering::Relaxed) as u64;
        let may_send = sending
            && (outstanding.len() as u64) < options.window.max(1)
            && delivered.load(Ordering::Relaxed) >= owed
            && now >= next_at;
        // Nothing to send yet: wake for the pacing time, or soon to look at deliveries again.
        let pause = if now < next_at {
            next_at - now
        } else {
            Duration::from_millis(1)
        };
        tokio::select! {
            biased;
            event = admin_event(&mut admin_client) => match event {
                Ok(Some(seq)) => {
                    if let Some(began) = outstanding.remove(&seq) {
                        call_latencies.record(0, began.elapsed());
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    admin_error = Some(err.to_string());
                    break;
                }
            },
            _ = std::future::ready(()), if may_send => {
                let began = Instant::now();
                let stamp = began.duration_since(clock).as_micros();
                let text = format!("{stamp} {sent} {padding}");
                if let Err(err) = send_broadcast(&mut admin_client, sent, text).await {
                    admin_error = Some(err.to_string());
                    break;
                }
                outstanding.insert(sent, began);
                sent += 1;
                if window.contains(began) {
                    sent_in_window += 1;
                }
                if let Some(pacing) = pacing {
                    // On schedule, or a timer tick behind it, keep it; further behind, start again
                    // from a little before now (no long catch-up burst).
                    next_at = (next_at + pacing).max(began.checked_sub(CATCH_UP).unwrap_or(began));
                }
            }
            _ = tokio::time::sleep(pause), if !may_send => {}
        }
    }
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until
        && delivered.load(Ordering::Relaxed) < sent * alive.load(Ordering::Relaxed) as u64
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let mut clients = vec![admin_client];
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(client)) = joined {
            clients.push(client);
        }
    }
    super::close_all(clients).await;

    let server_cpu = server_cpu.await.ok().flatten();
    let generator_cpu = generator_cpu.await.ok().flatten();
    let deliveries = in_window.load(Ordering::Relaxed);
    let rate = deliveries as f64 / window.seconds();
    let latency = latencies.summary();
    let delivered_total = delivered.load(Ordering::Relaxed);
    let receivers_lost = receiver_count - alive.load(Ordering::Relaxed);
    let figures = json!({
        "receivers": receiver_count,
        "receiver_failures": receivers.failures,
        "first_connect_error": receivers.first_error,
        "duration_s": window.seconds(),
        "rate_limit_per_s": options.rate,
        "window": options.window,
        "payload_bytes": options.payload_bytes,
        "broadcasts": sent,
        "broadcasts_per_s": round(sent_in_window as f64 / window.seconds(), 1),
        "deliveries_in_window": deliveries,
        "deliveries_per_s": round(rate, 1),
        "delivery_latency": latency,
        "broadcast_call_latency": call_latencies.summary(),
        "expected_deliveries": sent * receiver_count as u64,
        "delivered": delivered_total,
        "receivers_lost": receivers_lost,
        "admin_error": admin_error,
        "server_cpu": server_cpu,
        "generator_cpu": generator_cpu,
    });
    let summary = format!(
        "{:.0} deliveries/s to {receiver_count} connections ({:.1} broadcasts/s), delivery p50 {:.1} ms, p99 {:.1} ms; {delivered_total} of {} delivered, {receivers_lost} receivers lost",
        rate,
        sent_in_window as f64 / window.seconds(),
        latency.p50_ms,
        latency.p99_ms,
        sent * receiver_count as u64,
    );
    Ok(Outcome {
        figures,
        headline: Some(("deliveries_per_s", round(rate, 1))),
        summary,
    })
}

/// The send stamp (µs on the run's clock) of the next broadcast received; `None` for other
/// messages. Every path reads the whole message and checks it is the expected broadcast (on
/// Signet: a SystemMessage Invocation, its first argument the stamped text) before counting
/// it, and none decodes more than that: on Signet's JSON, only the type, target and first
/// argument are taken from the record, borrowed, the rest is parsed and skipped
/// ([`Delivery`]); MessagePack goes through the full decoder.
async fn next_broadcast(client: &mut Client) -> Result<Option<u64>, ClientError> {
    match client {
        Client::Hub(hub) if hub.protocol() == HubProtocol::Json => hub.recv_json(delivery).await,
        Client::Hub(hub) => match hub.recv().await? {
            HubMessage::Invocation {
                target, arguments, ..
            } if target == BROADCAST_TARGET => Ok(arguments
                .first()
                .and_then(Value::as_str)
                .and_then(|text| stamp_of(text.as_bytes()))),
            _ => Ok(None),
        },
        Client::Raw(raw) => {
            // The frame's UTF-8 was checked when it was read; the stamp is ASCII digits.
            let frame = raw.recv().await?;
            Ok(frame.strip_prefix(&[BROADCAST_MARKER]).and_then(stamp_of))
        }
        Client::SocketIo(socket) => match socket.recv().await? {
            Incoming::Event { name, args } if name == "message" => Ok(args
                .first()
                .and_then(Value::as_str)
                .and_then(|text| stamp_of(text.as_bytes()))),
            _ => Ok(None),
        },
    }
}

/// What the server's broadcasts call on every client.
const BROADCAST_TARGET: &str = "SystemMessage";

/// A JSON record from Signet as a broadcast receiver reads it: `None` for a Ping or a message
/// of another target, the stamp for a broadcast, an error for a Close, a record that is not
/// JSON, or an Invocation without its target and arguments (as the full decoder would refuse).
fn delivery(record: &[u8]) -> Result<Option<u64>, ClientError> {
    match read_record(record, |message: &Delivery<'_>| message.kind)? {
        (Some(MessageType::Invocation), message) => {
            let (Some(target), Some(first)) = (message.target, message.arguments) else {
                return Err(ClientError::BadResponse(
                    "an Invocation without target or arguments".into(),
                ));
            };
            if target.0 != BROADCAST_TARGET {
                return Ok(None);
            }
            Ok(first.0.and_then(|text| stamp_of(text.0.as_bytes())))
        }
        (Some(MessageType::Close), message) => {
            Err(ClientError::Closed(message.error.map(|text| text.0.into())))
        }
        _ => Ok(None),
    }
}

/// The properties of a hub message a receiver looks at; the others (`headers`,
/// `invocationId`, ...) are skipped.
#[derive(Deserialize)]
struct Delivery<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(borrow, default)]
    target: Option<Text<'a>>,
    #[serde(borrow, default)]
    arguments: Option<FirstText<'a>>,
    #[serde(borrow, default)]
    error: Option<Text<'a>>,
}

/// A JSON string, borrowed from the record unless it has escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(TextVisitor)?
            .ok_or_else(|| D::Error::custom("expected a string"))
    }
}

/// Reads a string as [`Text`], and anything else as `None` (skipped whole).
struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<Text<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Text(Cow::Borrowed(text))))
    }
    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(Text(Cow::Owned(text.to_string()))))
    }
    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Some(Text(Cow::Owned(text))))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// An `arguments` array: its first element if it is a string; the rest skipped.
struct FirstText<'a>(Option<Text<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(FirstTextVisitor)
    }
}

struct FirstTextVisitor;

/// The first element of a sequence, read as [`TextVisitor`] reads a value.
struct AnyValue<'a>(Option<Text<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for AnyValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor).map(AnyValue)
    }
}

impl<'de> Visitor<'de> for FirstTextVisitor {
    type Value = FirstText<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of arguments")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq
            .next_element::<AnyValue<'de>>()?
            .and_then(|value| value.0);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(FirstText(first))
    }
}

/// The stamp at the start of a broadcast text: its digits up to the first space.
fn stamp_of(text: &[u8]) -> Option<u64> {
    let digits = text.split(|&b| b == b' ').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Sends broadcast number `seq` without waiting for it to be done.
async fn send_broadcast(client: &mut Client, seq: u64, text: String) -> Result<(), ClientError> {
    match client {
        Client::Hub(hub) => {
            hub.send(&HubMessage::Invocation {
                headers: Default::default(),
                invocation_id: Some(format!("b{seq}")),
                target: "BroadcastMessage".into(),
                arguments: vec![Value::String(text)],
                stream_ids: Vec::new(),
            })
            .await
        }
        Client::Raw(raw) => {
            let mut frame = Vec::with_capacity(text.len() + 1);
            frame.push(BROADCAST_MARKER);
            frame.extend_from_slice(text.as_bytes());
            raw.send(frame).await
        }
        Client::SocketIo(socket) => {
            socket
                .emit("broadcast", &[Value::String(text)], Some(seq))
                .await
        }
    }
}

/// The next message to the admin: `Some(seq)` once broadcast `seq` is done (Signet's completion,
/// a Socket.IO peer's ack, or on the baseline the admin's own copy of the frame); `None` for
/// anything else.
async fn admin_event(client: &mut Client) -> Result<Option<u64>, ClientError> {
    match client {
        Client::Hub(hub) => match hub.recv().await? {
            HubMessage::Completion {
                invocation_id,
                result,
                ..
            } => {
                if let CompletionResult::Error(error) = result {
                    return Err(ClientError::Refused(error));
                }
                Ok(invocation_id
                    .strip_prefix('b')
                    .and_then(|seq| seq.parse().ok()))
            }
            _ => Ok(None),
        },
        Client::Raw(raw) => {
            let frame = raw.recv().await?;
            Ok(frame
                .strip_prefix(&[BROADCAST_MARKER])
                .and_then(|rest| std::str::from_utf8(rest).ok())
                .and_then(|text| text.split(' ').nth(1))
                .and_then(|seq| seq.parse().ok()))
        }
        Client::SocketIo(socket) => match socket.recv().await? {
            Incoming::Ack { id, .. } => Ok(Some(id)),
            Incoming::Event { .. } => Ok(None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as Signet writes it, separator cut off as the decoder does.
    fn record(message: &HubMessage) -> Vec<u8> {
        let mut out = Vec::new();
        HubProtocol::Json.encode(message, &mut out).unwrap();
        out.pop();
        out
    }

    #[test]
    fn a_broadcast_gives_its_stamp_and_anything_else_is_skipped_or_refused() {
        let broadcast = |text: &str| {
            record(&HubMessage::invocation(
                BROADCAST_TARGET,
                vec![json!(text), json!({"more": [1, 2]})],
            ))
        };
        assert_eq!(delivery(&broadcast("1234 7 xxxx")).ok(), Some(Some(1234)));
        // Escapes make the text owned; it is still read.
        assert_eq!(delivery(&broadcast("99 \"quoted\"\n")).ok(), Some(Some(99)));
        assert_eq!(delivery(&broadcast("not a stamp")).ok(), Some(None));
        let other = record(&HubMessage::invocation("Other", vec![json!("1 2")]));
        assert_eq!(delivery(&other).ok(), Some(None));
        let not_text = record(&HubMessage::invocation(BROADCAST_TARGET, vec![json!(5)]));
        assert_eq!(delivery(&not_text).ok(), Some(None));
        assert_eq!(delivery(&record(&HubMessage::Ping)).ok(), Some(None));
        let close = record(&HubMessage::close(Some("bye".into()), false));
        assert!(matches!(delivery(&close), Err(ClientError::Closed(Some(e))) if e == "bye"));
        assert!(delivery(br#"{"type":1,"target":"SystemMessage","#).is_err());
        assert!(delivery(br#"{"type":1,"arguments":["1 2"]}"#).is_err());
    }
}
