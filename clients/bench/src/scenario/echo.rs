//! `echo`: round trips per second and their latency, each connection in a closed loop (one
//! call outstanding, the next sent when the answer arrives). On Signet each call is `Echo` with a
//! small object, then, on the same connections, `EchoSigned` with a freshly signed envelope
//! around the same object; on the baseline each call is a frame echoed back; on a Socket.IO
//! peer the event `echo` with the same object, acknowledged with it; a SignalR peer gets `Echo`.
//! Signed calls are Signet's alone.

use super::{measure_cpu, read_record, remember, round, Outcome, Target, Window, CALL_TIMEOUT};
use crate::client::{bounded, Client, ClientError, HubClient, RawClient};
use crate::credentials::Identity;
use crate::socketio::SocketIoClient;
use crate::stats::Latencies;
use serde::Deserialize;
use serde_json::{json, Value};
use signet_protocol::envelope::{EnvelopeBuilder, MessageKey};
use signet_protocol::protocol::{CompletionResult, HubProtocol, MessageType};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EchoMode {
    Plain,
    Signed,
    Both,
}

pub struct EchoOptions {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub mode: EchoMode,
    /// `expiry - issuedAt` of the envelopes signed for `EchoSigned`.
    pub envelope_lifetime: Duration,
}

/// What one measured pass reports.
struct Pass {
    figures: Value,
    rate: f64,
}

pub async fn run(target: &Target, options: &EchoOptions) -> Result<Outcome, String> {
    let signed_wanted = options.mode != EchoMode::Plain && target.kind == super::TargetKind::Signet;
    if signed_wanted
        && !target
            .credentials
            .as_ref()
            .is_some_and(|c| c.has_envelope_secret())
    {
        return Err(
            "signed echo needs --envelope-secret (or SIGNET__ENVELOPE__SECRET); use --mode plain without it"
                .into(),
        );
    }
    let identities = target.identities("user", options.connections, &["user"])?;
    let established = target.establish(identities).await;
    let mut connections = established.connections;
    let mut figures = json!({ "connect": {
        "established": connections.len(),
        "failures": established.failures,
        "first_error": established.first_error,
    }});
    if connections.is_empty() {
        return Err(format!(
            "no connection opened: {}",
            established.first_error.unwrap_or_default()
        ));
    }

    let mut summary = Vec::new();
    let mut headline = None;
    let mut plain_rate = None;
    if options.mode != EchoMode::Signed || target.kind != super::TargetKind::Signet {
        let (pass, back) = measure(target, connections, options, false).await;
        connections = back;
        summary.push(format!("plain {}", describe(&pass.figures)));
        figures["plain"] = pass.figures;
        headline = Some(("round_trips_per_s", round(pass.rate, 1)));
        plain_rate = Some(pass.rate);
    }
    if signed_wanted {
        let (pass, back) = measure(target, connections, options, true).await;
        connections = back;
        let mut line = format!("signed {}", describe(&pass.figures));
        if let Some(plain) = plain_rate.filter(|rate| *rate > 0.0) {
            let ratio = pass.rate / plain;
            figures["signed_over_plain"] = json!(round(ratio, 3));
            line.push_str(&format!(" ({:.0}% of plain)", ratio * 100.0));
        }
        summary.push(line);
        figures["signed"] = pass.figures;
        headline.get_or_insert(("round_trips_per_s", round(pass.rate, 1)));
    }
    super::close_all(connections.into_iter().map(|(c, _)| c).collect()).await;
    Ok(Outcome {
        figures,
        headline,
        summary: summary.join("; "),
    })
}

fn describe(figures: &Value) -> String {
    format!(
        "{:.0} rt/s, p50 {} ms, p99 {} ms, p999 {} ms, {} errors",
        figures["round_trips_per_s"].as_f64().unwrap_or(0.0),
        figures["latency"]["p50_ms"],
        figures["latency"]["p99_ms"],
        figures["latency"]["p999_ms"],
        figures["errors"],
    )
}

/// Runs every connection's closed loop over one window; gives the connections back.
async fn measure(
    target: &Target,
    connections: Vec<(Client, Option<Identity>)>,
    options: &EchoOptions,
    signed: bool,
) -> (Pass, Vec<(Client, Option<Identity>)>) {
    let window = Window::after(options.warmup, options.duration);
    let server_cpu = measure_cpu(target.server_pids.clone(), window);
    let generator_cpu = measure_cpu(vec![std::process::id()], window);
    let latencies = Arc::new(Latencies::new());
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let hub_path: Arc<str> = Arc::from(target.endpoint.path.as_str());
    let lifetime = options.envelope_lifetime;
    let mut tasks = tokio::task::JoinSet::new();
    let started = connections.len();
    for (index, (mut client, identity)) in connections.into_iter().enumerate() {
        let latencies = latencies.clone();
        let completed = completed.clone();
        let errors = errors.clone();
        let first_error = first_error.clone();
        let hub_path = hub_path.clone();
        tasks.spawn(async move {
            let key = identity.as_ref().and_then(|i| i.message_key.clone());
            let mut seq = 0u64;
            let mut alive = true;
            while Instant::now() < window.end {
                seq += 1;
                let began = Instant::now();
                let call = round_trip(
                    &mut client,
                    seq,
                    signed.then_some(key.as_ref()).flatten(),
                    &hub_path,
                    lifetime,
                );
                let result = bounded(CALL_TIMEOUT, call).await;
                let ended = Instant::now();
                let counted = window.contains(began) && window.contains(ended);
                match result {
                    Ok(None) if counted => {
                        latencies.record(index, ended - began);
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Ok(Some(error)) => {
                        if counted {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        remember(&first_error, error);
                    }
                    Err(err) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        remember(&first_error, format!("connection lost: {err}"));
                        alive = false;
                        break;
                    }
                }
            }
            alive.then_some((client, identity))
        });
    }
    let mut back = Vec::with_capacity(started);
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(connection)) = joined {
            back.push(connection);
        }
    }
    let server_cpu = server_cpu.await.ok().flatten();
    let generator_cpu = generator_cpu.await.ok().flatten();
    let count = completed.load(Ordering::Relaxed);
    let rate = count as f64 / window.seconds();
    let first_error = first_error.lock().ok().and_then(|e| e.clone());
    let figures = json!({
        "connections": started,
        "duration_s": window.seconds(),
        "round_trips": count,
        "round_trips_per_s": round(rate, 1),
        "latency": latencies.summary(),
        "errors": errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "connections_lost": started - back.len(),
        "server_cpu": server_cpu,
        "generator_cpu": generator_cpu,
        "round_trips_per_server_cpu_s": server_cpu
            .filter(|cpu| cpu.cpu_s > 0.0)
            .map(|cpu| round(count as f64 / cpu.cpu_s, 0)),
    });
    (Pass { figures, rate }, back)
}

/// One call and its answer. `Ok(None)` is success, `Ok(Some(text))` an error the server
/// answered with (the connection stays usable), `Err` a lost connection.
async fn round_trip(
    client: &mut Client,
    seq: u64,
    key: Option<&MessageKey>,
    hub_path: &str,
    lifetime: Duration,
) -> Result<Option<String>, ClientError> {
    match client {
        Client::Hub(hub) => hub_round_trip(hub, seq, key, hub_path, lifetime).await,
        Client::Raw(raw) => raw_round_trip(raw, seq).await,
        Client::SocketIo(socket) => socketio_round_trip(socket, seq).await,
    }
}

async fn hub_round_trip(
    hub: &mut HubClient,
    seq: u64,
    key: Option<&MessageKey>,
    hub_path: &str,
    lifetime: Duration,
) -> Result<Option<String>, ClientError> {
    let (target, argument) = match key {
        Some(key) => ("EchoSigned", signed_echo(key, hub_path, seq, lifetime)),
        None => ("Echo", json!({ "seq": seq, "text": "hello" })),
    };
    if hub.protocol() == HubProtocol::Json {
        // The invocation written as text and the completion read borrowed from its record:
        // what a lean SignalR client does, with the same checks as the full decoder's path.
        let record = format!(
            "{{\"type\":1,\"invocationId\":\"{seq}\",\"target\":\"{target}\",\"arguments\":[{argument}]}}\u{1e}"
        );
        hub.send_json(record).await?;
        loop {
            if let Some(answer) = hub.recv_json(|record| echo_answer(record, seq)).await? {
                return Ok(answer);
            }
        }
    }
    match hub.invoke(&seq.to_string(), target, vec![argument]).await? {
        CompletionResult::Error(error) => Ok(Some(error)),
        CompletionResult::Result(echoed) => Ok(echo_differs(echoed["seq"].as_u64(), seq)),
        CompletionResult::Void => Ok(echo_differs(None, seq)),
    }
}

/// Both `Echo` and `EchoSigned` answer with `{seq, text}`, the object that was sent (inside
/// the envelope for `EchoSigned`).
fn echo_differs(echoed: Option<u64>, seq: u64) -> Option<String> {
    (echoed != Some(seq)).then(|| "the echo differs from what was sent".to_string())
}

/// A JSON record read while call `seq` waits: `None` for another message (a Ping, a
/// completion of another id), `Some` with the call's outcome for its completion (as
/// [`round_trip`] reports it), an error for a Close or a record that is not a hub message.
fn echo_answer(record: &[u8], seq: u64) -> Result<Option<Option<String>>, ClientError> {
    match read_record(record, |message: &EchoCompletion<'_>| message.kind)? {
        (Some(MessageType::Completion), message) => {
            let id = message.invocation_id.ok_or_else(|| {
                ClientError::BadResponse("a Completion without invocationId".into())
            })?;
            if id.parse::<u64>().ok() != Some(seq) {
                return Ok(None);
            }
            Ok(Some(match (message.error, message.result) {
                (Some(error), _) => Some(error.into_owned()),
                (None, result) => echo_differs(result.and_then(|echoed| echoed.seq), seq),
            }))
        }
        (Some(MessageType::Close), message) => {
            Err(ClientError::Closed(message.error.map(Cow::into_owned)))
        }
        _ => Ok(None),
    }
}

/// The properties of a hub message the echo loop looks at; the others are skipped.
#[derive(Deserialize)]
struct EchoCompletion<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(rename = "invocationId", borrow, default)]
    invocation_id: Option<Cow<'a, str>>,
    #[serde(default)]
    result: Option<Echoed>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// An echoed `{seq, text}`: only `seq` is read.
#[derive(Deserialize)]
struct Echoed {
    seq: Option<u64>,
}

/// A freshly signed envelope for `EchoSigned` around `{seq, text}`.
pub(super) fn signed_echo(key: &MessageKey, hub_path: &str, seq: u64, lifetime: Duration) -> Value {
    let message = format!("{{\"seq\":{seq},\"text\":\"hello\"}}");
    EnvelopeBuilder::new(key, hub_path, "EchoSigned")
        .lifetime(lifetime)
        .build(&message)
}

/// Invokes `target` with one argument. `Ok(None)` is success, `Ok(Some(text))` an error the
/// server answered with (the connection stays usable), `Err` a lost connection.
pub(super) async fn hub_call(
    hub: &mut HubClient,
    id: &str,
    target: &str,
    argument: Value,
) -> Result<Option<String>, ClientError> {
    match hub.invoke(id, target, vec![argument]).await? {
        CompletionResult::Error(error) => Ok(Some(error)),
        CompletionResult::Result(_) | CompletionResult::Void => Ok(None),
    }
}

async fn raw_round_trip(raw: &mut RawClient, seq: u64) -> Result<Option<String>, ClientError> {
    let payload = format!("{{\"seq\":{seq},\"text\":\"hello\"}}");
    raw.send(payload.clone().into_bytes()).await?;
    let echoed = raw.recv().await?;
    Ok((echoed[..] != *payload.as_bytes())
        .then(|| "the echo differs from what was sent".to_string()))
}

async fn socketio_round_trip(
    socket: &mut SocketIoClient,
    seq: u64,
) -> Result<Option<String>, ClientError> {
    let argument = json!({ "seq": seq, "text": "hello" });
    let answer = socket.call(seq, "echo", &[argument]).await?;
    let echoed = answer.first().and_then(|value| value["seq"].as_u64());
    Ok((echoed != Some(seq)).then(|| "the echo differs from what was sent".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_is_read_and_checked_against_the_call() {
        let ok = br#"{"type":3,"invocationId":"7","result":{"seq":7,"text":"hello"}}"#;
        assert_eq!(echo_answer(ok, 7).unwrap(), Some(None));
        let wrong = br#"{"type":3,"invocationId":"7","result":{"seq":8,"text":"hello"}}"#;
        assert!(matches!(echo_answer(wrong, 7).unwrap(), Some(Some(_))));
        let void = br#"{"type":3,"invocationId":"7"}"#;
        assert!(matches!(echo_answer(void, 7).unwrap(), Some(Some(_))));
        let error = br#"{"type":3,"invocationId":"7","error":"Failed to invoke 'Echo'"}"#;
        assert_eq!(
            echo_answer(error, 7).unwrap(),
            Some(Some("Failed to invoke 'Echo'".to_string()))
        );
    }

    #[test]
    fn other_messages_are_skipped_and_a_close_or_garbage_is_an_error() {
        let other_call = br#"{"type":3,"invocationId":"6","result":{"seq":6}}"#;
        assert_eq!(echo_answer(other_call, 7).unwrap(), None);
        assert_eq!(echo_answer(br#"{"type":6}"#, 7).unwrap(), None);
        let broadcast = br#"{"type":1,"target":"SystemMessage","arguments":["hi"]}"#;
        assert_eq!(echo_answer(broadcast, 7).unwrap(), None);
        let close = br#"{"type":7,"error":"Server is shutting down."}"#;
        assert!(matches!(
            echo_answer(close, 7),
            Err(ClientError::Closed(Some(_)))
        ));
        assert!(echo_answer(b"{\"type\":3,", 7).is_err());
        assert!(echo_answer(br#"{"type":3,"result":1}"#, 7).is_err());
    }
}
