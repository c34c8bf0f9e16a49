//! The envelope service the hub calls: message keys derived from the master key, verification
//! of incoming envelopes, and sealing of the envelopes the server forwards to devices.

use super::{
    derive_message_key, unix_now_ms, EnvelopeBuilder, EnvelopeError, EnvelopeLimits,
    EnvelopeVerifier, MessageKey, NonceStore,
};
use crate::settings::Secret;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Verifies and seals envelopes for one server.
pub struct EnvelopeService {
    verifier: EnvelopeVerifier,
    master: Secret,
}

impl std::fmt::Debug for EnvelopeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeService")
            .field("limits", self.verifier.limits())
            .finish_non_exhaustive()
    }
}

impl EnvelopeService {
    pub fn new(limits: EnvelopeLimits, nonces: Arc<dyn NonceStore>, master: Secret) -> Self {
        Self {
            verifier: EnvelopeVerifier::new(limits, nonces),
            master,
        }
    }

    /// The message key of a login session (its `sid`, or the token's `jti` without one).
    pub fn message_key(&self, session_id: &str) -> MessageKey {
        derive_message_key(self.master.expose(), session_id)
    }

    pub fn limits(&self) -> &EnvelopeLimits {
        self.verifier.limits()
    }

    /// Verifies an envelope sent by `session_id` to `target` on `hub_path`; returns the command.
    /// The session id also scopes the nonce, so a replay on another connection of the same
    /// session is caught.
    pub async fn open(
        &self,
        envelope: &Value,
        session_id: &str,
        hub_path: &str,
        target: &str,
    ) -> Result<Value, EnvelopeError> {
        let key = self.message_key(session_id);
        let verified = self
            .verifier
            .verify(envelope, &key, hub_path, target, session_id, unix_now_ms())
            .await?;
        Ok(verified.into_command())
    }

    /// Signs `message` for the session `session_id` (a device's), to be sent as `target`.
    pub fn seal(
        &self,
        session_id: &str,
        hub_path: &str,
        target: &str,
        message: &Value,
        lifetime: Duration,
    ) -> Value {
        let key = self.message_key(session_id);
        EnvelopeBuilder::new(&key, hub_path, target)
            .lifetime(lifetime)
            .build(&message.to_string())
    }
}
