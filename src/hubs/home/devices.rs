//! Home devices on the home hub: users send signed commands to their own devices, devices answer
//! with signed results and report signed telemetry, and owners see their devices come and go.
//!
//! Ownership is checked on every command: a device that is not the caller's (existing or not)
//! gets the same `device not found`, so ownership cannot be probed. What the server forwards to a
//! device is an envelope it signs with that device's own message key, so the device can check
//! freshness and replay itself.

use super::pending::{PendingCommand, PendingCommands, PendingError, PendingFull};
use super::telemetry::{TelemetryEvent, TelemetryFanout};
use super::HomeShared;
use crate::{
    random_id, unix_now_ms, Call, DeviceInfo, Devices, EnvelopeSealer, HubBuilder, HubContext,
    HubError, HubMetrics, InternalError, MethodResult, MethodSpec, Param, Principal,
};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;

const USERS: &[&str] = &["user", "admin"];
const DEVICES: &[&str] = &["device"];
/// Longest command name a user may send. A format rule of the home hub's API, not a setting.
const MAX_COMMAND_NAME: usize = 64;

/// State the device methods share.
struct Home {
    devices: Devices,
    sealer: EnvelopeSealer,
    /// Commands sent and not yet answered: command id -> device and issuer.
    pending: Arc<dyn PendingCommands>,
    telemetry: Arc<dyn TelemetryFanout>,
    /// Counts refusals by the pending-command caps.
    metrics: HubMetrics,
}

pub(super) fn register(
    builder: HubBuilder,
    context: &HubContext<'_>,
    shared: HomeShared,
) -> HubBuilder {
    let home = Arc::new(Home {
        devices: context.devices(),
        sealer: context.sealer(),
        pending: shared.pending,
        telemetry: shared.telemetry,
        metrics: context.metrics(),
    });
    builder
        .method(
            MethodSpec::new("ListDevices", &[]).roles(USERS),
            with(&home, list_devices),
        )
        .method(
            MethodSpec::new("SendCommand", &[Param::Object])
                .roles(USERS)
                .signed(),
            with(&home, send_command),
        )
        .method(
            MethodSpec::new("CommandResult", &[Param::Object])
                .roles(DEVICES)
                .signed(),
            with(&home, command_result),
        )
        .method(
            MethodSpec::new("ReportTelemetry", &[Param::Object])
                .roles(DEVICES)
                .signed(),
            with(&home, report_telemetry),
        )
        .stream(MethodSpec::new("StreamTelemetry", &[]).roles(USERS), {
            let home = home.clone();
            move |call, _| Ok(stream_telemetry(&home, &call.principal))
        })
        .on_connected(|call| presence(call, true))
        .on_disconnected({
            let home = home.clone();
            move |call| device_left(home.clone(), call)
        })
}

/// Binds the shared state into a method handler.
fn with<F, Fut>(
    home: &Arc<Home>,
    method: F,
) -> impl Fn(Call, Vec<Value>) -> Fut + Send + Sync + 'static
where
    F: Fn(Arc<Home>, Call, Vec<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = MethodResult> + 'static,
{
    let home = home.clone();
    move |call, args| method(home.clone(), call, args)
}

/// The verified command of a signed method, as `T`.
fn command<T: serde::de::DeserializeOwned>(args: Vec<Value>, what: &str) -> Result<T, HubError> {
    let value = args.into_iter().next().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| HubError::hub(format!("invalid {what}: {e}")))
}

fn internal(err: impl Into<InternalError>) -> HubError {
    HubError::internal(err)
}

/// Presence of one device: whether it has a connection to the hub (on any node).
async fn is_online(call: &Call, device_id: &str) -> Result<bool, HubError> {
    let online = call
        .clients
        .online(&[Devices::subject(device_id)])
        .await
        .map_err(internal)?;
    Ok(online.first().copied().unwrap_or(false))
}

/// `ListDevices()` (user, admin): the caller's devices (an admin's: all), with presence asked
/// once for all of them.
async fn list_devices(home: Arc<Home>, call: Call, _: Vec<Value>) -> MethodResult {
    let owner = (!call.principal.has_role("admin")).then_some(call.principal.sub.as_str());
    let devices = match owner {
        Some(owner) => home.devices.owned_by(owner).await,
        None => home.devices.all().await,
    }
    .map_err(internal)?;
    let subjects: Vec<String> = devices.iter().map(|d| Devices::subject(&d.id)).collect();
    let online = call.clients.online(&subjects).await.map_err(internal)?;
    let listed = devices
        .into_iter()
        .zip(online.into_iter().chain(std::iter::repeat(false)))
        .map(|(device, online)| {
            json!({ "deviceId": device.id, "name": device.name, "online": online })
        })
        .collect();
    Ok(Some(Value::Array(listed)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendCommandMessage {
    device_id: String,
    command: String,
    #[serde(default)]
    args: Option<Value>,
}

/// `SendCommand(envelope)` (user, admin; signed): forwards `{commandId, command, args, from}` to
/// the device as `Command(envelope)`, signed with the device's key; returns `{commandId}`.
async fn send_command(home: Arc<Home>, call: Call, args: Vec<Value>) -> MethodResult {
    let message: SendCommandMessage = command(args, "command")?;
    if message.command.is_empty() || message.command.len() > MAX_COMMAND_NAME {
        return Err(HubError::hub(format!(
            "invalid command: the name must be 1 to {MAX_COMMAND_NAME} bytes"
        )));
    }
    let principal = &call.principal;
    let device = commanded_device(&home, principal, &message.device_id).await?;
    // Each connection gets an envelope sealed with the message key of its own token.
    let targets: Vec<(String, String)> = call
        .clients
        .connections_of(&Devices::subject(&device.id))
        .await
        .map_err(internal)?
        .into_iter()
        .filter_map(|c| c.message_session.map(|session| (c.id, session)))
        .collect();
    if targets.is_empty() {
        return Err(HubError::hub("device offline"));
    }
    let command_id = random_id();
    await_result(&home, &command_id, &device.id, &principal.sub).await?;
    let forwarded = json!({
        "commandId": command_id,
        "command": message.command,
        "args": message.args.unwrap_or(Value::Null),
        "from": principal.sub,
    });
    for (connection_id, session) in targets {
        let envelope = home.sealer.seal(&session, "Command", &forwarded);
        call.clients
            .connection(&connection_id, "Command", vec![envelope])
            .await
            .map_err(internal)?;
    }
    // A send cannot say whether the device was still there; presence can. A device that left
    // meanwhile may already have freed its commands, so this one is freed here.
    if !is_online(&call, &device.id).await? {
        home.pending.remove(&command_id).await.map_err(internal)?;
        return Err(HubError::hub("device offline"));
    }
    tracing::info!(
        target: "audit",
        event = "command_sent",
        sub = %principal.sub,
        device = %device.id,
        command = %message.command,
        command_id = %command_id,
        "command forwarded to a device"
    );
    Ok(Some(json!({ "commandId": command_id })))
}

/// The device `device_id` if `principal` may command it: its owner, or an admin. Anyone else
/// reads "device not found", as for a device that does not exist.
async fn commanded_device(
    home: &Home,
    principal: &Principal,
    device_id: &str,
) -> Result<DeviceInfo, HubError> {
    let not_found = || HubError::hub("device not found");
    let device = home
        .devices
        .get(device_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    if device.owner != principal.sub && !principal.has_role("admin") {
        return Err(not_found());
    }
    Ok(device)
}

/// Records `command_id` as waiting for the device's result, within the pending-command caps
/// (a refusal is counted and told to the issuer).
async fn await_result(
    home: &Home,
    command_id: &str,
    device_id: &str,
    issuer: &str,
) -> Result<(), HubError> {
    let command = PendingCommand {
        device_id: device_id.to_string(),
        issuer: issuer.to_string(),
    };
    match home.pending.insert(command_id.to_string(), command).await {
        Ok(()) => Ok(()),
        Err(PendingError::Full(full)) => {
            home.metrics.rate_limited(match full {
                PendingFull::Issuer => "user_pending_commands",
                PendingFull::Server => "pending_commands",
            });
            Err(HubError::hub(match full {
                PendingFull::Issuer => {
                    "you have too many commands waiting for results; wait for some to be answered"
                }
                PendingFull::Server => "too many commands are waiting for results; try again later",
            }))
        }
        Err(PendingError::Backplane(err)) => Err(internal(err)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CommandResultMessage {
    command_id: String,
    status: String,
    #[serde(default)]
    result: Option<Value>,
}

/// `CommandResult(envelope)` (device; signed): accepted once, for a command sent to this device;
/// delivered to the issuer as `CommandResult({commandId, deviceId, status, result})`.
async fn command_result(home: Arc<Home>, call: Call, args: Vec<Value>) -> MethodResult {
    let message: CommandResultMessage = command(args, "command result")?;
    let device_id = Devices::id_of(&call.principal)
        .ok_or_else(|| HubError::hub("only devices send command results"))?;
    // Taking is what makes the answer single: a second result finds nothing.
    let pending = home
        .pending
        .take(&message.command_id, device_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| HubError::hub("unknown command"))?;
    let delivered = json!({
        "commandId": message.command_id,
        "deviceId": device_id,
        "status": message.status,
        "result": message.result.unwrap_or(Value::Null),
    });
    call.clients
        .user(&pending.issuer, "CommandResult", vec![delivered])
        .await
        .map_err(internal)?;
    tracing::info!(
        target: "audit",
        event = "command_result",
        device = %device_id,
        command_id = %message.command_id,
        status = %message.status,
        "device answered a command"
    );
    Ok(None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryMessage {
    kind: String,
    data: Value,
}

/// `ReportTelemetry(envelope)` (device; signed): the owner's connections receive
/// `Telemetry({deviceId, kind, data, at})`, and `StreamTelemetry` subscribers see it.
async fn report_telemetry(home: Arc<Home>, call: Call, args: Vec<Value>) -> MethodResult {
    let message: TelemetryMessage = command(args, "telemetry")?;
    let principal = &call.principal;
    let device_id =
        Devices::id_of(principal).ok_or_else(|| HubError::hub("only devices report telemetry"))?;
    let owner = principal
        .owner
        .clone()
        .ok_or_else(|| HubError::hub("the device token names no owner"))?;
    let payload = json!({
        "deviceId": device_id,
        "kind": message.kind,
        "data": message.data,
        "at": unix_now_ms(),
    });
    call.clients
        .user(&owner, "Telemetry", vec![payload.clone()])
        .await
        .map_err(internal)?;
    home.telemetry
        .publish(TelemetryEvent { owner, payload })
        .await
        .map_err(internal)?;
    Ok(None)
}

/// `StreamTelemetry()` (user, admin): the caller's devices' telemetry (an admin's: every
/// device's) until the caller cancels. A subscriber that falls behind skips what it missed.
fn stream_telemetry(
    home: &Home,
    principal: &Principal,
) -> impl futures_util::Stream<Item = Result<Value, HubError>> {
    let everything = principal.has_role("admin");
    let me = principal.sub.clone();
    home.telemetry.subscribe().filter_map(move |event| {
        let visible = everything || event.owner == me;
        std::future::ready(visible.then(|| Ok(event.payload.clone())))
    })
}

/// A device connection ended: when it was the device's last, its pending commands stop counting
/// against their issuers (a result it sends after reconnecting before their deadline is still
/// delivered), and its owner learns it went offline.
async fn device_left(home: Arc<Home>, call: Call) {
    if let Some(device_id) = Devices::id_of(&call.principal) {
        if !is_online(&call, device_id).await.unwrap_or(false) {
            if let Err(err) = home.pending.remove_device(device_id).await {
                tracing::warn!(error = %err, "cannot free the commands of a device that left");
            }
        }
    }
    presence(call, false).await;
}

/// Tells the owner `DeviceStatus({deviceId, online})` when a device connects or disconnects.
async fn presence(call: Call, connected: bool) {
    let principal = &call.principal;
    let (Some(device_id), Some(owner)) = (Devices::id_of(principal), principal.owner.as_deref())
    else {
        return;
    };
    let online = connected || is_online(&call, device_id).await.unwrap_or(false);
    let status = json!({ "deviceId": device_id, "online": online });
    if let Err(err) = call.clients.user(owner, "DeviceStatus", vec![status]).await {
        tracing::warn!(error = %err, "cannot tell an owner about a device's presence");
    }
}
