//! One connection's life: a single `select!` loop over hub messages, the keep-alive tick, the
//! server timeout, the telemetry tick, token renewal and shutdown. The loop ends with a
//! [`SessionEnd`] and the runner decides what happens next.
//!
//! Token renewal keeps the connection open: a margin before the token expires the device
//! exchanges its key again and moves the connection onto the new token with the hub's built-in
//! `RefreshToken(token)`. The new token has a new message key; see [`crate::keys`] for how
//! commands signed around the switch are still accepted. While the switch is under way nothing
//! signed is sent (results wait in the [`Outbox`], telemetry is skipped), because the server
//! checks each envelope against the key of the token it holds at that moment. If the server
//! refuses the refresh, the session ends with [`SessionEnd::Reconnect`] and the runner connects
//! again with the new token.

use crate::actuator::Actuator;
use crate::commands::{CommandHandler, CommandReply, Handled, RESULT_TARGET};
use crate::config::Config;
use crate::device::CommandStatus;
use crate::device::SimulatedDevice;
use crate::hub::{HubReceiver, HubSender, Incoming, LinkError};
use crate::keys::SessionKeys;
use crate::telemetry::{TelemetryReport, TELEMETRY_TARGET};
use crate::token::{DeviceToken, TokenError, TokenSource};
use rand::rngs::StdRng;
use serde_json::{json, Value};
use signet_protocol::envelope::unix_now_ms;
use signet_protocol::protocol::{CompletionResult, HubMessage};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The built-in hub method that moves a connection onto a new token.
pub const REFRESH_TARGET: &str = "RefreshToken";
/// The method the server calls with commands.
pub use crate::commands::COMMAND_TARGET;

/// Results waiting to be sent, at most this many; the oldest is dropped beyond it.
pub const OUTBOX_CAPACITY: usize = 64;
/// Invocations awaiting their Completion, at most this many tracked.
const MAX_PENDING: usize = 256;
/// An invocation without a Completion after this long is forgotten (and logged).
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server has to answer `RefreshToken` before the device reconnects instead.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);
/// Wait before retrying a failed renewal exchange (unless the server says longer).
const RENEWAL_RETRY: Duration = Duration::from_secs(10);
/// Longest wait for the WebSocket close when a session ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// SIGINT or SIGTERM: the device closed the connection.
    Stopped,
    /// The server sent a Close message.
    ServerClosed {
        error: Option<String>,
        allow_reconnect: bool,
    },
    /// The WebSocket closed or failed, or the server fell silent, without a Close message.
    Lost(String),
    /// The server refused the renewal on the open connection, or did not answer it. The token
    /// was replaced by the new one: connect again with it, without waiting.
    Reconnect,
    /// A renewal exchange answered 401: the key is no longer valid.
    CredentialsRejected,
    /// A renewal exchange failed in a way retrying cannot fix.
    Fatal(String),
}

/// `CommandResult`s waiting to be signed and sent; outlives connections so a result computed
/// while (or just before) a connection was down is delivered on the next one, unless its
/// command has timed out on the server by then (`--result-timeout`).
#[derive(Debug)]
pub struct Outbox {
    /// Each reply with the time its command arrived.
    replies: VecDeque<(CommandReply, Instant)>,
    result_timeout: Duration,
}

impl Outbox {
    pub fn new(result_timeout: Duration) -> Self {
        Self {
            replies: VecDeque::new(),
            result_timeout,
        }
    }

    /// Queues the reply to a command that arrived at `received`.
    pub fn push(&mut self, reply: CommandReply, received: Instant) {
        if self.replies.len() >= OUTBOX_CAPACITY {
            if let Some((dropped, _)) = self.replies.pop_front() {
                tracing::warn!(command_id = %dropped.command_id, "outbox full: dropped the oldest unsent result");
            }
        }
        self.replies.push_back((reply, received));
    }

    /// Drops the replies whose command the server has given up on.
    fn drop_timed_out(&mut self, now: Instant) {
        let timeout = self.result_timeout;
        self.replies.retain(|(reply, received)| {
            let live = now.duration_since(*received) <= timeout;
            if !live {
                tracing::warn!(
                    command_id = %reply.command_id,
                    "result not delivered before its command timed out; dropped"
                );
            }
            live
        });
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

/// What a session borrows from the runner: configuration, services and the device itself.
pub struct SessionContext<'a> {
    pub config: &'a Config,
    pub tokens: &'a TokenSource,
    pub handler: &'a CommandHandler,
    pub device: &'a mut SimulatedDevice,
    pub outbox: &'a mut Outbox,
    pub actuator: &'a mut Actuator,
    pub rng: &'a mut StdRng,
    pub shutdown: &'a CancellationToken,
}

/// A renewal sent to the server and not yet confirmed.
struct Refresh {
    invocation_id: String,
    token: DeviceToken,
    deadline: Instant,
}

type Exchange<'a> = Pin<Box<dyn Future<Output = Result<DeviceToken, TokenError>> + 'a>>;

struct Session<'c, 'a> {
    ctx: &'c mut SessionContext<'a>,
    sender: HubSender,
    keys: SessionKeys,
    /// Invocation id -> (target, when sent).
    pending: HashMap<String, (&'static str, Instant)>,
    refresh: Option<Refresh>,
}

/// Runs one connection until it ends. `token` is the token the connection was opened with;
/// it is replaced when a renewal succeeds (or is to be used for the next connection).
pub async fn run(
    ctx: &mut SessionContext<'_>,
    token: &mut DeviceToken,
    mut receiver: HubReceiver,
    sender: HubSender,
) -> SessionEnd {
    let config = ctx.config;
    let tokens = ctx.tokens;
    let shutdown = ctx.shutdown.clone();
    let mut session = Session {
        keys: SessionKeys::new(token.message_key().clone()),
        ctx,
        sender,
        pending: HashMap::new(),
        refresh: None,
    };

    let now = Instant::now();
    let mut keep_alive = interval_at(now + config.keep_alive, config.keep_alive);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut telemetry = interval_at(now, config.telemetry_interval);
    telemetry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let server_timeout = sleep_until(now + config.server_timeout);
    tokio::pin!(server_timeout);
    let mut renew_at = token.renew_at();
    let mut exchange: Option<Exchange<'_>> = None;

    // Results computed on an earlier connection that could not be sent there.
    if !session.ctx.outbox.is_empty() {
        tracing::info!(
            results = session.ctx.outbox.len(),
            "sending results left from the last connection"
        );
        if let Err(error) = session.flush_outbox().await {
            return lost(error);
        }
    }

    let end = loop {
        let refresh_deadline = session.refresh.as_ref().map(|r| r.deadline);
        let actuation_done = session.ctx.actuator.done_at();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break SessionEnd::Stopped,
            incoming = receiver.next() => {
                server_timeout.as_mut().reset(Instant::now() + config.server_timeout);
                match incoming {
                    Ok(Incoming::Message(message)) => {
                        if let Some(end) = session.on_message(message, token, &mut renew_at).await {
                            break end;
                        }
                    }
                    Ok(Incoming::SocketPing(payload)) => {
                        if let Err(error) = session.sender.pong(payload).await {
                            break lost(error);
                        }
                    }
                    Ok(Incoming::Closed) => {
                        break SessionEnd::Lost("the server closed the WebSocket without a Close message".into());
                    }
                    Err(error) => break lost(error),
                }
            }
            _ = &mut server_timeout => {
                break SessionEnd::Lost(format!("nothing from the server for {:?}", config.server_timeout));
            }
            _ = sleep_until(actuation_done.unwrap_or_else(Instant::now)), if actuation_done.is_some() => {
                if let Err(error) = session.finish_actuation().await {
                    break lost(error);
                }
            }
            _ = keep_alive.tick() => {
                if let Err(error) = session.sender.ping().await {
                    break lost(error);
                }
                session.forget_stale_invocations();
            }
            _ = telemetry.tick() => {
                if let Err(error) = session.report_telemetry().await {
                    break lost(error);
                }
            }
            _ = sleep_until(renew_at), if exchange.is_none() && session.refresh.is_none() => {
                tracing::info!("renewing the access token before it expires");
                exchange = Some(Box::pin(tokens.exchange()));
            }
            result = async {
                match exchange.as_mut() {
                    Some(pending) => pending.await,
                    None => std::future::pending().await,
                }
            }, if exchange.is_some() => {
                exchange = None;
                match result {
                    Ok(new) => {
                        if let Err(error) = session.start_refresh(new).await {
                            break lost(error);
                        }
                    }
                    Err(TokenError::Rejected) => break SessionEnd::CredentialsRejected,
                    Err(error) if error.is_transient() => {
                        let wait = match &error {
                            TokenError::Throttled { retry_after: Some(after) } => (*after).max(RENEWAL_RETRY),
                            _ => RENEWAL_RETRY,
                        };
                        tracing::warn!(%error, retry_in = ?wait, "token renewal failed; retrying");
                        renew_at = Instant::now() + wait;
                    }
                    Err(error) => break SessionEnd::Fatal(format!("token renewal failed: {error}")),
                }
            }
            _ = sleep_until(refresh_deadline.unwrap_or_else(Instant::now)), if refresh_deadline.is_some() => {
                tracing::warn!("the server did not confirm RefreshToken in time; reconnecting with the new token");
                if let Some(refresh) = session.refresh.take() {
                    *token = refresh.token;
                }
                break SessionEnd::Reconnect;
            }
        }
    };
    // A clean WebSocket close whatever the reason, bounded: a dead peer must not hold us here.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.sender.close()).await;
    end
}

fn lost(error: LinkError) -> SessionEnd {
    SessionEnd::Lost(error.to_string())
}

impl Session<'_, '_> {
    /// Handles one hub message; `Some` ends the session.
    async fn on_message(
        &mut self,
        message: HubMessage,
        token: &mut DeviceToken,
        renew_at: &mut Instant,
    ) -> Option<SessionEnd> {
        match message {
            HubMessage::Invocation {
                invocation_id,
                target,
                arguments,
                ..
            } => {
                let result = if target == COMMAND_TARGET {
                    self.on_command(arguments).await
                } else {
                    tracing::debug!(%target, "no client method with this name");
                    Ok(())
                };
                if let Err(error) = result {
                    return Some(lost(error));
                }
                // A server expecting a client result gets one; the real answer is the
                // CommandResult.
                if let Some(id) = invocation_id {
                    let completion = if target == COMMAND_TARGET {
                        CompletionResult::Void
                    } else {
                        CompletionResult::Error("Client didn't provide a result.".into())
                    };
                    if let Err(error) = self
                        .sender
                        .send(&HubMessage::completion(id, completion))
                        .await
                    {
                        return Some(lost(error));
                    }
                }
                None
            }
            HubMessage::Completion {
                invocation_id,
                result,
                ..
            } => {
                self.on_completion(&invocation_id, result, token, renew_at)
                    .await
            }
            HubMessage::Close {
                error,
                allow_reconnect,
            } => Some(SessionEnd::ServerClosed {
                error,
                allow_reconnect,
            }),
            HubMessage::Ping => None,
            other => {
                tracing::debug!(kind = %other.message_type(), "ignored a hub message");
                None
            }
        }
    }

    async fn on_command(&mut self, arguments: Vec<Value>) -> Result<(), LinkError> {
        let [envelope] = arguments.as_slice() else {
            tracing::warn!(
                arguments = arguments.len(),
                "Command with other than one argument; ignored"
            );
            return Ok(());
        };
        let now = Instant::now();
        let keys = self.keys.verification_keys(now);
        let accepted = self
            .ctx
            .handler
            .accept(envelope, &keys, unix_now_ms())
            .await;
        match accepted {
            Ok(command) => {
                let command_id = command.command_id.clone();
                match self.ctx.actuator.submit(command, now) {
                    Ok(()) => tracing::info!(
                        %command_id,
                        queued = self.ctx.actuator.len(),
                        "accepted a verified command"
                    ),
                    Err(command) => {
                        tracing::warn!(%command_id, "the actuator queue is full; command refused");
                        let reply = CommandReply {
                            command_id: command.command_id,
                            status: CommandStatus::Rejected,
                            result: Some(json!({ "reason": "device_busy" })),
                        };
                        self.ctx.outbox.push(reply, now);
                        self.flush_outbox().await?;
                    }
                }
            }
            Err(Handled::Executed { reply, .. }) => {
                tracing::warn!(command_id = %reply.command_id, "a verified Command names no command");
                self.ctx.outbox.push(reply, now);
                self.flush_outbox().await?;
            }
            Err(Handled::Rejected { code, reply }) => {
                tracing::warn!(
                    code,
                    answered = reply.is_some(),
                    "refused a Command envelope; not executed"
                );
                if let Some(reply) = reply {
                    self.ctx.outbox.push(reply, now);
                    self.flush_outbox().await?;
                }
            }
            Err(Handled::Unanswerable { reason }) => {
                tracing::warn!(reason, "a verified Command is not a command; ignored");
            }
        }
        Ok(())
    }

    /// The actuator finished its current command: queue the result, send what can be sent,
    /// and report the new state.
    async fn finish_actuation(&mut self) -> Result<(), LinkError> {
        let Some((handled, received)) = self.ctx.actuator.finish(self.ctx.device, Instant::now())
        else {
            return Ok(());
        };
        let Handled::Executed {
            command,
            reply,
            changed,
        } = handled
        else {
            return Ok(());
        };
        tracing::info!(
            command_id = %reply.command_id,
            %command,
            status = reply.status.as_str(),
            "executed a verified command"
        );
        self.ctx.outbox.push(reply, received);
        self.flush_outbox().await?;
        if changed && self.refresh.is_none() {
            let report = TelemetryReport::state(self.ctx.device, &self.ctx.config.name);
            self.send_signed(
                TELEMETRY_TARGET,
                report.seal(self.keys.signing_key(), self.ctx.handler.hub_path()),
            )
            .await?;
        }
        Ok(())
    }

    async fn on_completion(
        &mut self,
        invocation_id: &str,
        result: CompletionResult,
        token: &mut DeviceToken,
        renew_at: &mut Instant,
    ) -> Option<SessionEnd> {
        if self
            .refresh
            .as_ref()
            .is_some_and(|r| r.invocation_id == invocation_id)
        {
            let refresh = self.refresh.take()?;
            return match result {
                CompletionResult::Error(error) => {
                    tracing::warn!(%error, "the server refused RefreshToken; reconnecting with the new token");
                    self.keys.discard_staged();
                    *token = refresh.token;
                    Some(SessionEnd::Reconnect)
                }
                CompletionResult::Void | CompletionResult::Result(_) => {
                    self.keys.promote(Instant::now());
                    *token = refresh.token;
                    *renew_at = token.renew_at();
                    tracing::info!(lifetime = ?token.lifetime(), "access token renewed on the open connection");
                    match self.flush_outbox().await {
                        Ok(()) => None,
                        Err(error) => Some(lost(error)),
                    }
                }
            };
        }
        match (self.pending.remove(invocation_id), result) {
            (Some((target, _)), CompletionResult::Error(error)) => {
                tracing::warn!(target, %error, "the server refused an invocation");
            }
            (Some((target, _)), _) => tracing::debug!(target, "invocation completed"),
            (None, _) => tracing::debug!(invocation_id, "completion for an unknown invocation"),
        }
        None
    }

    /// Sends the new token with `RefreshToken`; its message key is accepted for incoming
    /// commands from now on, and used for signing once the server confirms.
    async fn start_refresh(&mut self, token: DeviceToken) -> Result<(), LinkError> {
        self.keys.stage(token.message_key().clone());
        let invocation_id = self
            .sender
            .invoke(REFRESH_TARGET, vec![json!(token.expose_access_token())])
            .await?;
        self.refresh = Some(Refresh {
            invocation_id,
            token,
            deadline: Instant::now() + REFRESH_TIMEOUT,
        });
        Ok(())
    }

    /// Sends the `state` and `temperature` reports (skipped while a renewal is under way).
    async fn report_telemetry(&mut self) -> Result<(), LinkError> {
        if self.refresh.is_some() {
            tracing::debug!("telemetry skipped during token renewal");
            return Ok(());
        }
        let hub_path = self.ctx.handler.hub_path();
        let celsius = self.ctx.device.read_temperature(self.ctx.rng);
        let reports = [
            TelemetryReport::state(self.ctx.device, &self.ctx.config.name),
            TelemetryReport::temperature(celsius),
        ];
        for report in reports {
            let envelope = report.seal(self.keys.signing_key(), hub_path);
            self.send_signed(TELEMETRY_TARGET, envelope).await?;
        }
        Ok(())
    }

    /// Signs and sends every waiting result, unless a renewal is under way.
    async fn flush_outbox(&mut self) -> Result<(), LinkError> {
        if self.refresh.is_some() {
            return Ok(());
        }
        self.ctx.outbox.drop_timed_out(Instant::now());
        while let Some((reply, _)) = self.ctx.outbox.replies.front() {
            let envelope = reply.seal(self.keys.signing_key(), self.ctx.handler.hub_path());
            self.send_signed(RESULT_TARGET, envelope).await?;
            self.ctx.outbox.replies.pop_front();
        }
        Ok(())
    }

    async fn send_signed(
        &mut self,
        target: &'static str,
        envelope: Value,
    ) -> Result<(), LinkError> {
        let id = self.sender.invoke(target, vec![envelope]).await?;
        if self.pending.len() < MAX_PENDING {
            self.pending.insert(id, (target, Instant::now()));
        }
        Ok(())
    }

    fn forget_stale_invocations(&mut self) {
        let now = Instant::now();
        self.pending.retain(|id, (target, sent)| {
            let stale = now.duration_since(*sent) > COMPLETION_TIMEOUT;
            if stale {
                tracing::warn!(invocation_id = %id, target = *target, "no completion from the server");
            }
            !stale
        });
    }
}
