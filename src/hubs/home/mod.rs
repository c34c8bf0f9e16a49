//! The home hub at `/hubs/home`: identity, echo, admin broadcasts, the stream methods that show
//! streaming in both directions, and (in `devices`) signed commands to home devices, their
//! results, telemetry and presence.

mod devices;
mod pending;
mod pending_redis;
mod telemetry;

use pending::{InProcessPendingCommands, PendingCommands};
use pending_redis::RedisPendingCommands;
use telemetry::{InProcessTelemetry, RedisTelemetry, TelemetryFanout};

use crate::settings::Settings;
use crate::{
    bind, Backplane, Call, HubBuilder, HubContext, HubError, MethodResult, MethodSpec, Param,
    UploadStream,
};
use futures_util::stream;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &[&str] = &["admin"];

/// Largest `Counter` a client may ask for, and its longest delay between items. `Counter` is
/// a demonstration method: its bounds are part of its contract, not settings.
const MAX_COUNTER_ITEMS: u64 = 10_000;
const MAX_COUNTER_DELAY_MS: u64 = 10_000;

/// What the home hub's devices share with the other nodes of a cluster, or keep in process.
struct HomeShared {
    pending: Arc<dyn PendingCommands>,
    telemetry: Arc<dyn TelemetryFanout>,
}

impl HomeShared {
    /// In process on a single node; on the hub's backplane (telemetry relayed through it)
    /// in a cluster.
    fn new(settings: &Settings, backplane: Option<Backplane>) -> Self {
        let home = &settings.home;
        let timeout = Duration::from_secs(home.command_timeout_secs);
        let telemetry = Arc::new(InProcessTelemetry::new(home.telemetry_buffer));
        match backplane {
            Some(backplane) => Self {
                pending: Arc::new(RedisPendingCommands::new(
                    backplane.clone(),
                    home.max_pending_commands,
                    home.max_pending_commands_per_user,
                    timeout,
                )),
                telemetry: Arc::new(RedisTelemetry::start(backplane, telemetry)),
            },
            None => Self {
                pending: Arc::new(InProcessPendingCommands::new(
                    home.max_pending_commands,
                    home.max_pending_commands_per_user,
                    timeout,
                )),
                telemetry,
            },
        }
    }
}

/// The home hub's methods on `builder` (the server adds the upstream methods after them):
/// what `signet serve` registers as hub `home`.
pub fn setup(builder: HubBuilder, context: &HubContext<'_>) -> HubBuilder {
    let shared = HomeShared::new(context.settings(), context.backplane());
    devices::register(builder, context, shared)
        .method(MethodSpec::new("Whoami", &[]), whoami)
        .method(MethodSpec::new("Echo", &[Param::Any]), echo)
        .method(
            MethodSpec::new("EchoSigned", &[Param::Object]).signed(),
            echo,
        )
        .method(
            MethodSpec::new("BroadcastMessage", &[Param::String]).roles(ADMIN),
            broadcast_message,
        )
        .method(
            MethodSpec::new("GetConnectedUsersCount", &[]).roles(ADMIN),
            connected_users_count,
        )
        .method(
            MethodSpec::new("ListConnectedUsers", &[]).roles(ADMIN),
            list_connected_users,
        )
        .method(
            MethodSpec::new("DisconnectUser", &[Param::String]).roles(ADMIN),
            disconnect_user,
        )
        .method(
            MethodSpec::new("DropTransport", &[]).roles(ADMIN),
            drop_transport,
        )
        .stream(
            MethodSpec::new("Counter", &[Param::Integer, Param::Integer]),
            counter,
        )
        .upload(MethodSpec::new("UploadSum", &[]), 1, upload_sum)
}

/// `Whoami()`: `{sub, roles, expiresAt}` of the caller's current token.
async fn whoami(call: Call, _: Vec<Value>) -> MethodResult {
    let principal = &call.principal;
    Ok(Some(json!({
        "sub": principal.sub,
        "roles": principal.roles,
        "expiresAt": principal.expires_at,
    })))
}

/// `Echo(value)`: returns its argument. As `EchoSigned(envelope)` it returns the verified
/// command, which shows (and lets clients and benchmarks measure) the envelope path.
async fn echo(_: Call, args: Vec<Value>) -> MethodResult {
    Ok(args.into_iter().next())
}

/// `BroadcastMessage(text)` (admin): `SystemMessage(text)` to every connection of the hub.
async fn broadcast_message(call: Call, args: Vec<Value>) -> MethodResult {
    let (text,): (String,) = bind(args)?;
    call.clients
        .all("SystemMessage", vec![Value::String(text)])
        .await
        .map_err(HubError::internal)?;
    tracing::info!(target: "audit", event = "broadcast", sub = %call.principal.sub, "admin broadcast");
    Ok(None)
}

/// `GetConnectedUsersCount()` (admin): distinct principals connected.
async fn connected_users_count(call: Call, _: Vec<Value>) -> MethodResult {
    let count = call
        .clients
        .user_count()
        .await
        .map_err(HubError::internal)?;
    Ok(Some(json!(count)))
}

/// `ListConnectedUsers()` (admin): who is connected to the hub, on any node and transport:
/// `[{sub, name, roles, connections}]` sorted by name, at most
/// the 500 entries [`crate::Clients::connected_users`] answers, so an admin can pick whom to disconnect.
async fn list_connected_users(call: Call, _: Vec<Value>) -> MethodResult {
    let users = call
        .clients
        .connected_users()
        .await
        .map_err(HubError::internal)?;
    let listed: Vec<Value> = users
        .into_iter()
        .map(|user| {
            json!({
                "sub": user.sub,
                "name": user.name,
                "roles": user.roles,
                "connections": user.connections,
            })
        })
        .collect();
    Ok(Some(Value::Array(listed)))
}

/// `DisconnectUser(userId)` (admin): closes every connection of that user (its `sub`), on
/// every hub and transport, with `allowReconnect: false`; returns how many were closed.
async fn disconnect_user(call: Call, args: Vec<Value>) -> MethodResult {
    let (user,): (String,) = bind(args)?;
    let closed = call
        .clients
        .disconnect_user(&user)
        .await
        .map_err(HubError::internal)?;
    tracing::info!(target: "audit", event = "user_kicked", admin = %call.principal.sub, sub = %user, closed, "admin disconnected a user");
    Ok(Some(json!(closed)))
}

/// `DropTransport()` (admin): drops the caller's own transport the way a network failure
/// would (a WebSocket ends without a close frame, a poll or event stream ends), leaving the
/// connection to its reconnect rules. For trying out clients' reconnect handling, stateful
/// reconnect above all; its completion arrives once the client is back.
async fn drop_transport(call: Call, _: Vec<Value>) -> MethodResult {
    tracing::info!(target: "audit", event = "drop_transport", sub = %call.principal.sub, connection = %call.log_id(), "admin dropped its transport");
    call.drop_transport();
    Ok(None)
}

/// `Counter(count, delayMs)`: streams 0..count, one item every `delayMs`.
fn counter(
    _: Call,
    args: Vec<Value>,
) -> Result<impl futures_util::Stream<Item = Result<Value, HubError>>, HubError> {
    let (count, delay_ms): (u64, u64) = bind(args)?;
    if count > MAX_COUNTER_ITEMS || delay_ms > MAX_COUNTER_DELAY_MS {
        return Err(HubError::hub(format!(
            "count must be at most {MAX_COUNTER_ITEMS} and delayMs at most {MAX_COUNTER_DELAY_MS}"
        )));
    }
    let delay = Duration::from_millis(delay_ms);
    Ok(stream::unfold(0u64, move |i| async move {
        if i >= count {
            return None;
        }
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok(json!(i)), i + 1))
    }))
}

/// `UploadSum(stream)`: the sum of the numbers the client streams.
async fn upload_sum(_: Call, _: Vec<Value>, mut streams: Vec<UploadStream>) -> MethodResult {
    let Some(mut numbers) = streams.pop() else {
        return Err(HubError::hub("a stream of numbers is required"));
    };
    let mut sum = 0f64;
    while let Some(item) = numbers.recv().await {
        sum += item
            .as_f64()
            .ok_or_else(|| HubError::hub("every streamed item must be a number"))?;
    }
    Ok(Some(json!(sum)))
}
