//! Handling `Command(envelope)`: verify, act, and build the signed `CommandResult`.
//!
//! The envelope is checked with the library's [`EnvelopeVerifier`] exactly as the server checks
//! what it receives (shape, lifetime, time window, signature for hub path and target `Command`,
//! then the nonce in the device's own cache), so a command that was tampered with, signed by
//! anyone but the server for this device's session, expired, or already executed never reaches
//! the device.
//!
//! A command that fails verification is not executed and, as a rule, not answered: its
//! `commandId` cannot be trusted. The one exception is an envelope whose signature is authentic
//! but which is outside its time window (`expired`, `not_yet_valid`, usually a clock problem):
//! its `commandId` is the server's, so the device answers `rejected` with the code, and the user
//! learns why nothing happened. Replays are never answered: the original was.

use crate::device::{CommandStatus, SimulatedDevice};
use serde::Serialize;
use serde_json::{json, Value};
use signet_protocol::envelope::{
    Envelope, EnvelopeBuilder, EnvelopeError, EnvelopeLimits, EnvelopeVerifier, InMemoryNonceStore,
    MessageKey,
};
use std::sync::Arc;

/// The method the server calls on the device.
pub const COMMAND_TARGET: &str = "Command";
/// The hub method the device answers with.
pub const RESULT_TARGET: &str = "CommandResult";

/// Nonces the device remembers at once. The server sends a handful of commands a minute; a
/// full cache refuses further commands (`nonce_store_unavailable`) rather than forgetting one.
pub const NONCE_CAPACITY: u64 = 10_000;

/// Longest `commandId` accepted, so a result never carries an unbounded echo.
const MAX_COMMAND_ID_CHARS: usize = 128;

/// What the device sends back: the message of a `CommandResult` envelope.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandReply {
    pub command_id: String,
    pub status: CommandStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl CommandReply {
    /// The message as JSON text, exactly what is signed.
    pub fn message(&self) -> String {
        // A struct of strings and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `CommandResult` envelope, signed with `key` for `hub_path`.
    pub fn seal(&self, key: &MessageKey, hub_path: &str) -> Value {
        EnvelopeBuilder::new(key, hub_path, RESULT_TARGET).build(&self.message())
    }
}

/// What became of one `Command`.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Verified and acted on (status `ok`, or `error` for an unknown command or bad arguments).
    Executed {
        command: String,
        reply: CommandReply,
        /// Whether the device's state changed.
        changed: bool,
    },
    /// Verification failed with `code`; not executed. `reply` is the `rejected` answer when
    /// the envelope was authentic but stale, `None` otherwise.
    Rejected {
        code: &'static str,
        reply: Option<CommandReply>,
    },
    /// Verified, but the message is not a command with a `commandId`: nothing to act on and
    /// nothing to answer.
    Unanswerable { reason: &'static str },
}

/// A verified command waiting for the actuator. Its nonce is already recorded: it is executed
/// at most once, whatever happens to the connection.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedCommand {
    pub command_id: String,
    pub name: String,
    pub args: Value,
}

impl AcceptedCommand {
    pub fn execute(self, device: &mut SimulatedDevice) -> Handled {
        let outcome = device.execute(&self.name, &self.args);
        Handled::Executed {
            command: self.name,
            reply: CommandReply {
                command_id: self.command_id,
                status: outcome.status,
                result: Some(outcome.result),
            },
            changed: outcome.changed,
        }
    }
}

/// Verifies and executes commands. One per process: its nonce cache outlives connections, so
/// a command replayed on a later connection is caught too.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    verifier: EnvelopeVerifier,
    hub_path: String,
    scope: String,
}

impl CommandHandler {
    /// `scope` names the device's nonce partition (its id); `hub_path` is bound into every
    /// signature.
    pub fn new(hub_path: &str, scope: &str, limits: EnvelopeLimits) -> Self {
        Self {
            verifier: EnvelopeVerifier::new(
                limits,
                Arc::new(InMemoryNonceStore::new(NONCE_CAPACITY)),
            ),
            hub_path: hub_path.to_string(),
            scope: scope.to_string(),
        }
    }

    pub fn hub_path(&self) -> &str {
        &self.hub_path
    }

    /// Verifies `envelope` against `keys` (see [`crate::keys`]) at `now_ms` (Unix ms by the
    /// system clock) and, if it passes, executes it on `device`.
    pub async fn handle(
        &self,
        envelope: &Value,
        keys: &[&MessageKey],
        device: &mut SimulatedDevice,
        now_ms: u64,
    ) -> Handled {
        match self.accept(envelope, keys, now_ms).await {
            Ok(command) => command.execute(device),
            Err(handled) => handled,
        }
    }

    /// Verifies `envelope` (recording its nonce) without executing it: `Ok` is a command for
    /// the actuator, `Err` the final outcome (refused, or nothing to execute).
    pub async fn accept(
        &self,
        envelope: &Value,
        keys: &[&MessageKey],
        now_ms: u64,
    ) -> Result<AcceptedCommand, Handled> {
        let command = match self.verify(envelope, keys, now_ms).await {
            Ok(command) => command,
            Err(error) => {
                let code = error.code();
                let reply = match error {
                    EnvelopeError::Expired { .. } | EnvelopeError::NotYetValid { .. } => self
                        .authentic_command_id(envelope, keys)
                        .map(|command_id| CommandReply {
                            command_id,
                            status: CommandStatus::Rejected,
                            result: Some(json!({ "reason": code })),
                        }),
                    _ => None,
                };
                return Err(Handled::Rejected { code, reply });
            }
        };
        let Some(command_id) = command_id(&command) else {
            return Err(Handled::Unanswerable {
                reason: "the message has no usable commandId",
            });
        };
        let Some(name) = command.get("command").and_then(Value::as_str) else {
            return Err(Handled::Executed {
                command: String::new(),
                reply: CommandReply {
                    command_id,
                    status: CommandStatus::Error,
                    result: Some(json!({ "error": "the message has no command name" })),
                },
                changed: false,
            });
        };
        Ok(AcceptedCommand {
            name: name.to_string(),
            args: command.get("args").cloned().unwrap_or(Value::Null),
            command_id,
        })
    }

    /// The library's checks with each key in turn. Only `bad_signature` depends on the key,
    /// and the nonce is recorded only after a signature matched, so trying several keys never
    /// burns a nonce for a forgery.
    async fn verify(
        &self,
        envelope: &Value,
        keys: &[&MessageKey],
        now_ms: u64,
    ) -> Result<Value, EnvelopeError> {
        let mut last = EnvelopeError::BadSignature;
        for key in keys {
            match self
                .verifier
                .verify(
                    envelope,
                    key,
                    &self.hub_path,
                    COMMAND_TARGET,
                    &self.scope,
                    now_ms,
                )
                .await
            {
                Ok(verified) => return Ok(verified.into_command()),
                Err(EnvelopeError::BadSignature) => last = EnvelopeError::BadSignature,
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }

    /// The `commandId` of an envelope refused for its time window, if its signature is
    /// authentic under one of `keys`; `None` for anything that could be forged.
    fn authentic_command_id(&self, envelope: &Value, keys: &[&MessageKey]) -> Option<String> {
        let parsed = Envelope::parse(envelope).ok()?;
        let input = parsed.signing_input(&self.hub_path, COMMAND_TARGET);
        if !input.is_unambiguous() || !keys.iter().any(|key| input.verify(key, &parsed.signature)) {
            return None;
        }
        let message: Value = serde_json::from_str(parsed.message).ok()?;
        command_id(&message)
    }
}

fn command_id(message: &Value) -> Option<String> {
    message
        .get("commandId")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty()
                && id.chars().count() <= MAX_COMMAND_ID_CHARS
                && !id.chars().any(char::is_control)
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::LockState;
    use signet_protocol::envelope::{derive_message_key, sign, unix_now_ms};
    use std::time::Duration;

    const HUB: &str = "/hubs/home";

    fn device_key() -> MessageKey {
        derive_message_key(b"envelope master key for the tests", "device-session-1")
    }

    fn handler() -> CommandHandler {
        CommandHandler::new(HUB, "device-1", EnvelopeLimits::default())
    }

    fn open_door(id: &str) -> String {
        json!({"commandId": id, "command": "OPEN_DOOR", "args": null, "from": "user-1"}).to_string()
    }

    /// What the server sends: the command signed with the device's key for `Command`.
    fn command(message: &str) -> Value {
        EnvelopeBuilder::new(&device_key(), HUB, COMMAND_TARGET).build(message)
    }

    async fn handle(
        handler: &CommandHandler,
        envelope: &Value,
        device: &mut SimulatedDevice,
    ) -> Handled {
        handler
            .handle(envelope, &[&device_key()], device, unix_now_ms())
            .await
    }

    fn rejected_code(handled: &Handled) -> &'static str {
        match handled {
            Handled::Rejected { code, .. } => code,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[tokio::test]
    async fn executes_a_verified_command_and_signs_the_result() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let handled = handle(&handler, &command(&open_door("c-1")), &mut device).await;
        let Handled::Executed {
            command,
            reply,
            changed,
        } = handled
        else {
            panic!("{handled:?}");
        };
        assert_eq!(command, "OPEN_DOOR");
        assert!(changed);
        assert_eq!(device.lock_state(), LockState::Unlocked);
        assert_eq!(reply.command_id, "c-1");
        assert_eq!(reply.status, CommandStatus::Ok);

        // The result verifies, as the server will check it, only for `CommandResult`.
        let sealed = reply.seal(&device_key(), HUB);
        let server = EnvelopeVerifier::new(
            EnvelopeLimits::default(),
            Arc::new(InMemoryNonceStore::new(100)),
        );
        let verified = server
            .verify(
                &sealed,
                &device_key(),
                HUB,
                RESULT_TARGET,
                "device-session-1",
                unix_now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(
            verified.command(),
            &json!({"commandId": "c-1", "status": "ok", "result": {"door": "opened", "lock": "unlocked", "doorOpenings": 1}})
        );
        let lifetime = verified.expiry() - verified.issued_at();
        assert!(lifetime <= 60_000, "{lifetime}");
        let wrong_target = server
            .verify(
                &sealed,
                &device_key(),
                HUB,
                COMMAND_TARGET,
                "device-session-1",
                unix_now_ms(),
            )
            .await
            .unwrap_err();
        assert_eq!(wrong_target.code(), "bad_signature");
    }

    #[tokio::test]
    async fn unknown_commands_are_answered_with_error() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let message =
            json!({"commandId": "c-2", "command": "SELF_DESTRUCT", "from": "u"}).to_string();
        let handled = handle(&handler, &command(&message), &mut device).await;
        let Handled::Executed { reply, changed, .. } = handled else {
            panic!("{handled:?}");
        };
        assert_eq!(reply.status, CommandStatus::Error);
        assert!(!changed);
        assert_eq!(device, SimulatedDevice::default());
    }

    #[tokio::test]
    async fn a_tampered_command_is_not_executed_and_not_answered() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let mut envelope = command(&json!({"commandId": "c-3", "command": "LOCK"}).to_string());
        envelope["message"] = json!(open_door("c-3"));
        let handled = handle(&handler, &envelope, &mut device).await;
        assert_eq!(
            handled,
            Handled::Rejected {
                code: "bad_signature",
                reply: None
            }
        );
        assert_eq!(device, SimulatedDevice::default());
    }

    #[tokio::test]
    async fn a_command_signed_with_another_key_or_for_another_target_is_refused() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let other = derive_message_key(b"envelope master key for the tests", "user-session-9");
        let foreign = EnvelopeBuilder::new(&other, HUB, COMMAND_TARGET).build(&open_door("c-4"));
        assert_eq!(
            rejected_code(&handle(&handler, &foreign, &mut device).await),
            "bad_signature"
        );

        // A user's SendCommand envelope relayed as a Command: bound to another target.
        let relayed =
            EnvelopeBuilder::new(&device_key(), HUB, "SendCommand").build(&open_door("c-5"));
        assert_eq!(
            rejected_code(&handle(&handler, &relayed, &mut device).await),
            "bad_signature"
        );
        let other_hub = EnvelopeBuilder::new(&device_key(), "/hubs/other", COMMAND_TARGET)
            .build(&open_door("c-6"));
        assert_eq!(
            rejected_code(&handle(&handler, &other_hub, &mut device).await),
            "bad_signature"
        );
        assert_eq!(device, SimulatedDevice::default());
    }

    #[tokio::test]
    async fn a_replayed_command_runs_once_and_is_not_answered_again() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let envelope = command(&open_door("c-7"));
        assert!(matches!(
            handle(&handler, &envelope, &mut device).await,
            Handled::Executed { .. }
        ));
        let again = handle(&handler, &envelope, &mut device).await;
        assert_eq!(
            again,
            Handled::Rejected {
                code: "replayed_nonce",
                reply: None
            }
        );
        assert_eq!(device.door_openings(), 1);
        // The cache is the handler's, not a connection's: a clone (a later session) shares it.
        let later = handler.clone();
        assert_eq!(
            rejected_code(&handle(&later, &envelope, &mut device).await),
            "replayed_nonce"
        );
    }

    #[tokio::test]
    async fn an_authentic_expired_command_is_answered_rejected() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let old = unix_now_ms() - 120_000;
        let envelope = EnvelopeBuilder::new(&device_key(), HUB, COMMAND_TARGET)
            .issued_at(old)
            .lifetime(Duration::from_secs(30))
            .build(&open_door("c-8"));
        let handled = handle(&handler, &envelope, &mut device).await;
        let Handled::Rejected {
            code: "expired",
            reply: Some(reply),
        } = handled
        else {
            panic!("{handled:?}");
        };
        assert_eq!(reply.command_id, "c-8");
        assert_eq!(reply.status, CommandStatus::Rejected);
        assert_eq!(reply.result, Some(json!({"reason": "expired"})));
        assert_eq!(device, SimulatedDevice::default());

        let future = EnvelopeBuilder::new(&device_key(), HUB, COMMAND_TARGET)
            .issued_at(unix_now_ms() + 60_000)
            .build(&open_door("c-9"));
        let handled = handle(&handler, &future, &mut device).await;
        assert!(matches!(
            handled,
            Handled::Rejected {
                code: "not_yet_valid",
                reply: Some(_)
            }
        ));
        assert_eq!(device, SimulatedDevice::default());
    }

    #[tokio::test]
    async fn a_forged_expired_command_is_not_answered() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let other = derive_message_key(b"another master key entirely....", "x");
        let envelope = EnvelopeBuilder::new(&other, HUB, COMMAND_TARGET)
            .issued_at(unix_now_ms() - 120_000)
            .build(&open_door("victim-command"));
        let handled = handle(&handler, &envelope, &mut device).await;
        assert_eq!(
            handled,
            Handled::Rejected {
                code: "expired",
                reply: None
            }
        );
    }

    #[tokio::test]
    async fn too_long_and_malformed_envelopes_are_refused() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let long = EnvelopeBuilder::new(&device_key(), HUB, COMMAND_TARGET)
            .lifetime(Duration::from_secs(3600))
            .build(&open_door("c-10"));
        assert_eq!(
            rejected_code(&handle(&handler, &long, &mut device).await),
            "lifetime_too_long"
        );
        for malformed in [json!("OPEN_DOOR"), json!({}), json!(null)] {
            assert_eq!(
                rejected_code(&handle(&handler, &malformed, &mut device).await),
                "malformed"
            );
        }
        let mut extra = command(&open_door("c-11"));
        extra["unsigned"] = json!("looks authenticated");
        assert_eq!(
            rejected_code(&handle(&handler, &extra, &mut device).await),
            "malformed"
        );
        assert_eq!(device, SimulatedDevice::default());
    }

    #[tokio::test]
    async fn a_forgery_does_not_burn_the_nonce_of_the_real_command() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let real = command(&open_door("c-12"));
        let mut forged = real.clone();
        forged["message"] = json!(json!({"commandId": "c-12", "command": "UNLOCK"}).to_string());
        assert_eq!(
            rejected_code(&handle(&handler, &forged, &mut device).await),
            "bad_signature"
        );
        assert!(matches!(
            handle(&handler, &real, &mut device).await,
            Handled::Executed { .. }
        ));
    }

    #[tokio::test]
    async fn commands_signed_with_a_renewed_sessions_key_are_accepted() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        let new_key = derive_message_key(b"envelope master key for the tests", "device-session-2");
        let envelope =
            EnvelopeBuilder::new(&new_key, HUB, COMMAND_TARGET).build(&open_door("c-13"));
        let handled = handler
            .handle(
                &envelope,
                &[&device_key(), &new_key],
                &mut device,
                unix_now_ms(),
            )
            .await;
        assert!(matches!(handled, Handled::Executed { .. }), "{handled:?}");
        // A replay under the other key ordering is still a replay: one cache for all keys.
        let again = handler
            .handle(
                &envelope,
                &[&new_key, &device_key()],
                &mut device,
                unix_now_ms(),
            )
            .await;
        assert_eq!(rejected_code(&again), "replayed_nonce");
    }

    #[tokio::test]
    async fn messages_without_a_command_id_are_not_answered() {
        let handler = handler();
        let mut device = SimulatedDevice::default();
        for message in [
            json!({"command": "LOCK"}),
            json!({"commandId": "", "command": "LOCK"}),
            json!({"commandId": 7, "command": "LOCK"}),
            json!({"commandId": "x".repeat(129), "command": "LOCK"}),
        ] {
            let handled = handle(&handler, &command(&message.to_string()), &mut device).await;
            assert!(
                matches!(handled, Handled::Unanswerable { .. }),
                "{message}: {handled:?}"
            );
        }
        let nameless = json!({"commandId": "c-14", "args": {}}).to_string();
        let Handled::Executed { reply, .. } =
            handle(&handler, &command(&nameless), &mut device).await
        else {
            panic!("a command without a name is answered with an error");
        };
        assert_eq!(reply.status, CommandStatus::Error);
    }

    #[test]
    fn reply_messages_omit_an_absent_result() {
        let reply = CommandReply {
            command_id: "c".into(),
            status: CommandStatus::Ok,
            result: None,
        };
        assert_eq!(reply.message(), r#"{"commandId":"c","status":"ok"}"#);
        // And the signature covers exactly that text.
        let sealed = reply.seal(&device_key(), HUB);
        let envelope = Envelope::parse(&sealed).unwrap();
        let expected = sign(
            &device_key(),
            HUB,
            RESULT_TARGET,
            envelope.issued_at,
            envelope.expiry,
            envelope.nonce,
            envelope.message,
        );
        assert_eq!(sealed["signature"], json!(expected));
        assert_eq!(envelope.message, reply.message());
    }
}
