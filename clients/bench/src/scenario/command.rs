//! `command`: a user sending signed commands to their devices through the hub and back.
//!
//! Everything goes through the server's own flows, as a browser and a real device would: the
//! user logs in (`POST /api/auth/login`, which also hands out its message key), provisions
//! devices (`POST /api/devices`), each device exchanges its key for a token
//! (`POST /api/auth/device-token`). Then each of the user's connections keeps one command
//! outstanding per device it drives: `SendCommand(envelope)` -> the server verifies it, looks the
//! device up, signs `Command(envelope)` with the device's key -> the device verifies that (its own
//! nonce store) and answers `CommandResult(envelope)` -> the server verifies it and delivers
//! `CommandResult` to the user. The latency is from `SendCommand` to that delivery. The devices
//! are removed at the end.
//!
//! Results go to every connection of the user (SignalR's `Clients.User`), so with C user
//! connections the server delivers each result C times; the JSON line says so.

use super::{measure_cpu, round, Outcome, Target, TargetKind, Window};
use crate::client::{api_request, bounded, ClientError, HubClient};
use crate::stats::Latencies;
use serde_json::{json, Value};
use signet_protocol::envelope::{
    unix_now_ms, EnvelopeBuilder, EnvelopeLimits, EnvelopeVerifier, InMemoryNonceStore, MessageKey,
};
use signet_protocol::protocol::{CompletionResult, HubMessage};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest the run waits for one step of setting up or tearing down.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the window the user connections wait for results still outstanding.
const DRAIN: Duration = Duration::from_secs(5);
/// Lifetime of the envelopes the user and the devices sign.
const ENVELOPE_LIFETIME: Duration = Duration::from_secs(10);

pub struct CommandOptions {
    /// Connections of the user.
    pub connections: usize,
    /// Devices provisioned and connected (at most `identity.max_devices_per_user`).
    pub devices: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub username: String,
    pub password: Option<String>,
}

pub async fn run(target: &Target, options: &CommandOptions) -> Result<Outcome, String> {
    if target.kind == TargetKind::Baseline {
        return Ok(unavailable("the baseline server has no hub methods"));
    }
    let Some(password) = options.password.as_deref() else {
        return Ok(unavailable(
            "needs a user's password (--password or SIGNET_BENCH_PASSWORD) to log in and provision devices",
        ));
    };
    let login = bounded(
        SETUP_TIMEOUT,
        api_request(
            &target.endpoint,
            "POST",
            "/api/auth/login",
            None,
            Some(&json!({ "username": options.username, "password": password })),
        ),
    )
    .await
    .map_err(|e| format!("login: {e}"))?;
    match login {
        (200, _) => {}
        (404, _) => {
            return Ok(unavailable(
                "not available on this server: it has no login API (issue 3)",
            ))
        }
        (status, body) => return Err(format!("login answered {status}: {body}")),
    }
    let user_token = text_field(&login.1, "accessToken")?;
    let user_key = MessageKey::from_base64url(&text_field(&login.1, "messageKey")?)
        .map_err(|e| format!("login message key: {e}"))?;

    let mut devices = Vec::new();
    let provisioned = provision(target, &user_token, options.devices, &mut devices).await;
    let outcome = match provisioned {
        Ok(()) => drive(target, options, &user_token, &user_key, &devices).await,
        Err(err) => Err(err),
    };
    for device in &devices {
        let path = format!("/api/devices/{}", device.id);
        let _ = bounded(
            SETUP_TIMEOUT,
            api_request(&target.endpoint, "DELETE", &path, Some(&user_token), None),
        )
        .await;
    }
    outcome
}

/// What the user connections count together.
#[derive(Default)]
struct Tally {
    latencies: Latencies,
    completed: AtomicU64,
    unanswered: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct Device {
    id: String,
    token: String,
    key: MessageKey,
}

fn text_field(body: &Value, name: &str) -> Result<String, String> {
    body[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the response has no `{name}`: {body}"))
}

/// Creates `count` devices and exchanges each one's key for its token.
async fn provision(
    target: &Target,
    user_token: &str,
    count: usize,
    devices: &mut Vec<Device>,
) -> Result<(), String> {
    for i in 0..count {
        let body = json!({ "name": format!("bench-device-{i}") });
        let (status, created) = bounded(
            SETUP_TIMEOUT,
            api_request(
                &target.endpoint,
                "POST",
                "/api/devices",
                Some(user_token),
                Some(&body),
            ),
        )
        .await
        .map_err(|e| format!("creating a device: {e}"))?;
        if status != 201 {
            return Err(format!("creating device {i} answered {status}: {created}"));
        }
        let id = text_field(&created, "deviceId")?;
        let exchange = json!({ "deviceId": id, "deviceKey": text_field(&created, "deviceKey")? });
        let (status, issued) = bounded(
            SETUP_TIMEOUT,
            api_request(
                &target.endpoint,
                "POST",
                "/api/auth/device-token",
                None,
                Some(&exchange),
            ),
        )
        .await
        .map_err(|e| format!("device token: {e}"))?;
        if status != 200 {
            return Err(format!("device token answered {status}: {issued}"));
        }
        let key = MessageKey::from_base64url(&text_field(&issued, "messageKey")?)
            .map_err(|e| format!("device message key: {e}"))?;
        devices.push(Device {
            id,
            token: text_field(&issued, "accessToken")?,
            key,
        });
    }
    Ok(())
}

async fn connect(target: &Target, index: usize, token: &str) -> Result<HubClient, String> {
    bounded(
        SETUP_TIMEOUT,
        HubClient::connect(
            target.node(index),
            target.sources.for_index(index),
            token,
            target.protocol,
            target.skip_negotiation,
        ),
    )
    .await
    .map_err(|e| format!("connecting: {e}"))
}

async fn drive(
    target: &Target,
    options: &CommandOptions,
    user_token: &str,
    user_key: &MessageKey,
    devices: &[Device],
) -> Result<Outcome, String> {
    let hub_path: Arc<str> = Arc::from(target.endpoint.path.as_str());
    let mut device_clients = Vec::with_capacity(devices.len());
    // Across nodes (`--spread across`) the user is on the first server, the devices elsewhere.
    let (device_side, user_side) = (target.receivers(), target.senders());
    for (i, device) in devices.iter().enumerate() {
        device_clients.push(connect(&device_side, i, &device.token).await?);
    }
    let mut user_clients = Vec::with_capacity(options.connections);
    for i in 0..options.connections.max(1) {
        user_clients.push(connect(&user_side, devices.len() + i, user_token).await?);
    }

    // A device counts as online once its hub registered it, just after its handshake answer.
    wait_until_online(&mut user_clients[0], devices).await?;

    let window = Window::after(options.warmup, options.duration);
    let server_cpu = measure_cpu(target.server_pids.clone(), window);
    let generator_cpu = measure_cpu(vec![std::process::id()], window);
    let stop = tokio_util::sync::CancellationToken::new();
    let executed = Arc::new(AtomicU64::new(0));
    let mut device_tasks = tokio::task::JoinSet::new();
    for (client, device) in device_clients.into_iter().zip(devices) {
        let stop = stop.clone();
        let key = device.key.clone();
        let (hub_path, executed) = (hub_path.clone(), executed.clone());
        device_tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = act_as_device(client, key, hub_path, executed) => {}
            }
        });
    }

    let tally = Arc::new(Tally::default());
    let users = user_clients.len();
    let mut user_tasks = tokio::task::JoinSet::new();
    for (index, client) in user_clients.into_iter().enumerate() {
        // Connection `index` drives devices index, index + users, index + 2 x users, ...
        let mine: VecDeque<String> = devices
            .iter()
            .skip(index)
            .step_by(users)
            .map(|d| d.id.clone())
            .collect();
        let key = user_key.clone();
        let (hub_path, tally) = (hub_path.clone(), tally.clone());
        user_tasks.spawn(async move {
            let driven = send_commands(client, key, hub_path, mine, window, &tally);
            if let Err(err) = driven.await {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut slot) = tally.first_error.lock() {
                    slot.get_or_insert(err.to_string());
                }
            }
        });
    }
    while user_tasks.join_next().await.is_some() {}
    stop.cancel();
    while device_tasks.join_next().await.is_some() {}

    let server_cpu = server_cpu.await.ok().flatten();
    let generator_cpu = generator_cpu.await.ok().flatten();
    let count = tally.completed.load(Ordering::Relaxed);
    let rate = count as f64 / window.seconds();
    let latency = tally.latencies.summary();
    let first_error = tally.first_error.lock().ok().and_then(|e| e.clone());
    let figures = json!({
        "available": true,
        "user_connections": users,
        "devices": devices.len(),
        "results_delivered_per_command": users,
        "duration_s": window.seconds(),
        "round_trips": count,
        "commands_per_s": round(rate, 1),
        "latency": latency,
        "commands_executed_by_devices": executed.load(Ordering::Relaxed),
        "unanswered": tally.unanswered.load(Ordering::Relaxed),
        "errors": tally.errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "server_cpu": server_cpu,
        "generator_cpu": generator_cpu,
    });
    let summary = format!(
        "{rate:.0} commands/s user -> device -> user ({users} user connections, {} devices), p50 {:.1} ms, p99 {:.1} ms",
        devices.len(),
        latency.p50_ms,
        latency.p99_ms,
    );
    Ok(Outcome {
        figures,
        headline: Some(("commands_per_s", round(rate, 1))),
        summary,
    })
}

/// Asks `ListDevices` until every device is online (at most [`SETUP_TIMEOUT`]).
async fn wait_until_online(client: &mut HubClient, devices: &[Device]) -> Result<(), String> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    for attempt in 0u32.. {
        let listed = bounded(
            SETUP_TIMEOUT,
            client.invoke(&format!("list{attempt}"), "ListDevices", Vec::new()),
        )
        .await
        .map_err(|e| format!("ListDevices: {e}"))?;
        let online = match listed {
            CompletionResult::Result(Value::Array(listed)) => listed
                .iter()
                .filter(|d| d["online"] == true)
                .filter_map(|d| d["deviceId"].as_str())
                .filter(|id| devices.iter().any(|device| device.id == *id))
                .count(),
            other => return Err(format!("ListDevices answered {other:?}")),
        };
        if online == devices.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {online} of {} devices came online",
                devices.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One user connection: one command outstanding per device it drives, until the window ends;
/// then it waits for what is still outstanding. `Err` only for a lost connection or a refusal.
async fn send_commands(
    mut client: HubClient,
    key: MessageKey,
    hub_path: Arc<str>,
    mut idle: VecDeque<String>,
    window: Window,
    tally: &Tally,
) -> Result<(), ClientError> {
    let mut outstanding: HashMap<String, (String, Instant)> = HashMap::new();
    let mut in_call: Option<(String, String, Instant)> = None;
    let mut early = EarlyResults::default();
    let mut seq = 0u64;
    // Results still outstanding this long after the window are given up on (and reported).
    let deadline = window.end + DRAIN;
    loop {
        if in_call.is_none() && Instant::now() < window.end {
            if let Some(device) = idle.pop_front() {
                seq += 1;
                let message =
                    json!({ "deviceId": device, "command": "bench", "args": { "seq": seq } });
                let envelope = EnvelopeBuilder::new(&key, &hub_path, "SendCommand")
                    .lifetime(ENVELOPE_LIFETIME)
                    .build(&message.to_string());
                let id = format!("c{seq}");
                client
                    .send(&HubMessage::Invocation {
                        headers: Default::default(),
                        invocation_id: Some(id.clone()),
                        target: "SendCommand".into(),
                        arguments: vec![envelope],
                        stream_ids: Vec::new(),
                    })
                    .await?;
                in_call = Some((id, device, Instant::now()));
            }
        }
        if in_call.is_none() && outstanding.is_empty() && Instant::now() >= window.end {
            break;
        }
        let Ok(message) = tokio::time::timeout_at(deadline.into(), client.recv()).await else {
            tally
                .unanswered
                .fetch_add(outstanding.len() as u64, Ordering::Relaxed);
            break;
        };
        let message = message?;
        match message {
            HubMessage::Completion {
                invocation_id,
                result,
                ..
            } => {
                let Some((id, device, began)) = in_call.take() else {
                    continue;
                };
                if invocation_id != id {
                    in_call = Some((id, device, began));
                    continue;
                }
                match result {
                    CompletionResult::Result(value) => {
                        let command_id = value["commandId"].as_str().unwrap_or_default();
                        if early.take(command_id) {
                            finish(tally, window, began, device, &mut idle);
                        } else {
                            // The device is busy until its result comes back.
                            outstanding.insert(command_id.to_string(), (device, began));
                        }
                    }
                    CompletionResult::Error(error) => return Err(ClientError::Refused(error)),
                    CompletionResult::Void => {
                        return Err(ClientError::BadResponse(
                            "SendCommand returned nothing".into(),
                        ))
                    }
                }
            }
            HubMessage::Invocation {
                target, arguments, ..
            } if target == "CommandResult" => {
                let result = arguments.first().cloned().unwrap_or(Value::Null);
                let command_id = result["commandId"].as_str().unwrap_or_default();
                match outstanding.remove(command_id) {
                    Some((device, began)) => finish(tally, window, began, device, &mut idle),
                    // Another connection's command, or ours before its completion named it.
                    None => early.remember(command_id),
                }
            }
            _ => {}
        }
    }
    client.close().await;
    Ok(())
}

/// A command is done: its latency counts if it began and ended in the window; its device is
/// free for the next one.
fn finish(
    tally: &Tally,
    window: Window,
    began: Instant,
    device: String,
    idle: &mut VecDeque<String>,
) {
    let ended = Instant::now();
    if window.contains(began) && window.contains(ended) {
        tally.latencies.record(0, ended - began);
        tally.completed.fetch_add(1, Ordering::Relaxed);
    }
    idle.push_back(device);
}

/// Results whose command this connection has not seen named yet. Across nodes a device's
/// `CommandResult` can reach the user before the completion of its `SendCommand` that carries
/// the command id (the result travels device node -> Redis -> user node while the user's node
/// is still answering the call). Every result reaches every connection of the user, so most
/// are other connections'; the oldest are forgotten beyond a bound.
#[derive(Default)]
struct EarlyResults {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl EarlyResults {
    const BOUND: usize = 4096;

    fn remember(&mut self, command_id: &str) {
        if self.order.len() >= Self::BOUND {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        if self.ids.insert(command_id.to_string()) {
            self.order.push_back(command_id.to_string());
        }
    }

    /// Whether the result of `command_id` already came (and forgets it).
    fn take(&mut self, command_id: &str) -> bool {
        self.ids.remove(command_id)
    }
}

/// A device: verifies each `Command` envelope (its key, the time window, its own nonce store)
/// and answers with a signed `CommandResult`.
async fn act_as_device(
    mut client: HubClient,
    key: MessageKey,
    hub_path: Arc<str>,
    executed: Arc<AtomicU64>,
) -> Result<(), ClientError> {
    let verifier = EnvelopeVerifier::new(
        EnvelopeLimits::default(),
        Arc::new(InMemoryNonceStore::new(1_000_000)),
    );
    let mut answered = 0u64;
    loop {
        let HubMessage::Invocation {
            target, arguments, ..
        } = client.recv().await?
        else {
            continue;
        };
        if target != "Command" {
            continue;
        }
        let Some(envelope) = arguments.first() else {
            continue;
        };
        let verified = verifier
            .verify(
                envelope,
                &key,
                &hub_path,
                "Command",
                "device",
                unix_now_ms(),
            )
            .await;
        let Ok(verified) = verified else { continue };
        let command = verified.into_command();
        let Some(command_id) = command["commandId"].as_str() else {
            continue;
        };
        executed.fetch_add(1, Ordering::Relaxed);
        let result = json!({ "commandId": command_id, "status": "ok", "result": command["args"] });
        let envelope = EnvelopeBuilder::new(&key, &hub_path, "CommandResult")
            .lifetime(ENVELOPE_LIFETIME)
            .build(&result.to_string());
        answered += 1;
        client
            .send(&HubMessage::Invocation {
                headers: Default::default(),
                invocation_id: Some(format!("r{answered}")),
                target: "CommandResult".into(),
                arguments: vec![envelope],
                stream_ids: Vec::new(),
            })
            .await?;
    }
}

fn unavailable(reason: &str) -> Outcome {
    Outcome {
        figures: json!({ "available": false, "reason": reason }),
        headline: None,
        summary: format!("command: {reason}"),
    }
}
