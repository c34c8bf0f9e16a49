//! Sealing what a hub forwards to a device: the server signs it with that device's own
//! message key, so the device checks its freshness and replay itself.

use crate::envelope::EnvelopeService;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Signs the messages a hub sends to a device (or any client holding a message key), from
/// [`crate::HubContext::sealer`]: an envelope with the hub's path, the target, a fresh nonce
/// and the lifetime `envelope.forward_lifetime_secs`, signed with the message key of the
/// receiver's login session ([`crate::ConnectionInfo::message_session`]), which only that
/// session and the server can derive. The receiver verifies it as the server verifies what
/// clients send (`signet-device` does).
///
/// ```no_run
/// use signet::{Devices, HubBuilder, HubContext, HubError, MethodSpec, Param};
///
/// fn setup(hub: HubBuilder, context: &HubContext<'_>) -> HubBuilder {
///     let sealer = context.sealer();
///     hub.method(MethodSpec::new("Ring", &[Param::String]), move |call, args| {
///         let sealer = sealer.clone();
///         async move {
///             let (device,): (String,) = signet::bind(args)?;
///             let connections = call
///                 .clients
///                 .connections_of(&Devices::subject(&device))
///                 .await
///                 .map_err(HubError::internal)?;
///             for connection in connections {
///                 // Each connection's envelope is sealed with the key of its own token.
///                 let Some(session) = &connection.message_session else { continue };
///                 let envelope = sealer.seal(session, "Ring", &serde_json::json!({ "times": 3 }));
///                 call.clients
///                     .connection(&connection.id, "Ring", vec![envelope])
///                     .await
///                     .map_err(HubError::internal)?;
///             }
///             Ok(None)
///         }
///     })
/// }
/// ```
#[derive(Clone)]
pub struct EnvelopeSealer {
    envelopes: Arc<EnvelopeService>,
    hub_path: String,
    lifetime: Duration,
}

impl fmt::Debug for EnvelopeSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvelopeSealer")
            .field("hub_path", &self.hub_path)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl EnvelopeSealer {
    /// Seals for hub `hub` (path `/hubs/{hub}`) with envelopes living `lifetime`.
    pub(crate) fn new(envelopes: Arc<EnvelopeService>, hub: &str, lifetime: Duration) -> Self {
        Self {
            envelopes,
            hub_path: format!("/hubs/{hub}"),
            lifetime,
        }
    }

    /// The envelope of `message`, sent as `target`, for the login session `session` (a
    /// connection's [`crate::ConnectionInfo::message_session`]).
    pub fn seal(&self, session: &str, target: &str, message: &Value) -> Value {
        self.envelopes
            .seal(session, &self.hub_path, target, message, self.lifetime)
    }

    /// How long a sealed envelope is valid (`envelope.forward_lifetime_secs`).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{EnvelopeLimits, InMemoryNonceStore};
    use crate::settings::Secret;
    use serde_json::json;

    #[tokio::test]
    async fn a_sealed_envelope_opens_only_for_its_session_hub_and_target() {
        let envelopes = Arc::new(EnvelopeService::new(
            EnvelopeLimits::default(),
            Arc::new(InMemoryNonceStore::default()),
            Secret::new(b"a master secret of enough length".to_vec()),
        ));
        let sealer = EnvelopeSealer::new(envelopes.clone(), "home", Duration::from_secs(30));
        let message = json!({ "commandId": "c1", "command": "on" });
        // A fresh envelope for each attempt, so none is refused as a replay.
        for (session, path, target) in [
            ("session-2", "/hubs/home", "Command"),
            ("session-1", "/hubs/other", "Command"),
            ("session-1", "/hubs/home", "Telemetry"),
        ] {
            let sealed = sealer.seal("session-1", "Command", &message);
            assert!(
                envelopes
                    .open(&sealed, session, path, target)
                    .await
                    .is_err(),
                "{session} {path} {target}"
            );
        }
        let sealed = sealer.seal("session-1", "Command", &message);
        let opened = envelopes
            .open(&sealed, "session-1", "/hubs/home", "Command")
            .await
            .unwrap();
        assert_eq!(opened, message);
        assert_eq!(sealer.lifetime(), Duration::from_secs(30));
    }
}
