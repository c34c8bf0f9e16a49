//! Revocation reaches live connections at once: a task follows the authenticator's revocation
//! events (logout, refresh-token reuse, admin revoke, device removal or re-key), finds the
//! connections each event names through the registry's indexes, asks the revocation store
//! whether their current token is really revoked (a device re-keyed and reconnected with a
//! new token is not), and closes those with `allowReconnect: false`.

use super::{Claim, CloseReason, ConnectionRegistry};
use crate::auth::{Authenticator, RevocationEvent, TokenError};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Follows revocation events until `shutdown`; spawn it once per server. Subscribes before it
/// returns the future, so no event published after this call is missed.
pub fn enforce_revocations(
    auth: Authenticator,
    connections: Arc<ConnectionRegistry>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let events = auth.subscribe_revocations();
    follow(auth, connections, shutdown, events)
}

async fn follow(
    auth: Authenticator,
    connections: Arc<ConnectionRegistry>,
    shutdown: CancellationToken,
    mut events: tokio::sync::broadcast::Receiver<RevocationEvent>,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => apply(&auth, &connections, &event).await,
            Err(RecvError::Lagged(missed)) => {
                // Events were lost: check every connection rather than miss a revocation.
                tracing::warn!(
                    missed,
                    "revocation events lagged; re-checking every connection"
                );
                auth.metrics().revocation_applied("lagged");
                recheck(&auth, connections.all(), LAGGED).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The close text when events were lost and every connection is checked again.
const LAGGED: &str = "token revoked";
/// The close text when a revocation landed while the connection was being set up.
const WHILE_CONNECTING: &str = "the token was revoked while connecting";
/// The close text when revocation could not be checked (fail closed).
const UNVERIFIABLE: &str = "the token could not be checked against revocations";

/// Closes the connections `event` revokes. Each kind of event has its metrics label and the
/// text a closed connection is told (after `Authentication revoked: `).
async fn apply(auth: &Authenticator, connections: &ConnectionRegistry, event: &RevocationEvent) {
    let (kind, candidates, why) = match event {
        RevocationEvent::Jti { jti, .. } => (
            "token",
            connections.matching(Claim::TokenId(jti)),
            "logged out",
        ),
        RevocationEvent::Session { sid, .. } => (
            "session",
            connections.matching(Claim::Session(sid)),
            "session revoked",
        ),
        RevocationEvent::UserBefore { sub, .. } => {
            let mut found = connections.matching(Claim::Subject(sub));
            found.extend(connections.matching(Claim::Owner(sub)));
            ("user", found, "access revoked by an administrator")
        }
        RevocationEvent::Device { sub, .. } => (
            "device",
            connections.matching(Claim::Subject(sub)),
            "device removed or re-keyed",
        ),
    };
    auth.metrics().revocation_applied(kind);
    let closed = recheck(auth, candidates, why).await;
    tracing::debug!(
        kind,
        cause = event.cause().as_str(),
        closed,
        "revocation applied to live connections"
    );
}

/// Asks once more, after `connection` was registered or moved onto a new token, whether that
/// token is revoked, and closes the connection at once if it is, or if that cannot be known
/// (fail closed). Authentication and the registry insert are two steps: a revocation landing
/// between them finds the connection in none of the indexes its event is applied through, and
/// only this check catches it. (One after the insert is enough: a revocation recorded later
/// finds the connection indexed.) Returns whether the connection stays open.
pub async fn admit(auth: &Authenticator, connection: &super::Connection) -> bool {
    match auth.check_revocation(&connection.principal()).await {
        Ok(()) => true,
        Err(err) => {
            connection.close(CloseReason::Revoked(refusal(&err, WHILE_CONNECTING)));
            false
        }
    }
}

/// The close text for a refused check: `why` for a revoked token, or that it could not be
/// checked.
fn refusal(err: &TokenError, why: &str) -> String {
    match err {
        TokenError::RevocationUnavailable => UNVERIFIABLE,
        _ => why,
    }
    .to_string()
}

/// Closes the candidates whose token is revoked, or cannot be checked (fail closed); returns
/// how many.
async fn recheck(
    auth: &Authenticator,
    candidates: Vec<Arc<super::Connection>>,
    why: &str,
) -> usize {
    let mut closed = 0;
    for connection in candidates {
        if let Err(err) = auth.check_revocation(&connection.principal()).await {
            connection.close(CloseReason::Revoked(refusal(&err, why)));
            auth.metrics().revocation_closed_connection();
            closed += 1;
        }
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::issue::unix_now;
    use crate::auth::revocation::StoreUnavailable;
    use crate::auth::{
        KeyRing, Principal, RequestAuthError, RevocationCause, RevocationError, RevocationState,
        RevocationStore,
    };
    use crate::connection::Connection;
    use crate::settings::{ResolvedSecrets, Secret, SecretSource, Settings};
    use async_trait::async_trait;
    use std::time::Duration;
    use tokio::sync::broadcast;
    use tokio_util::sync::CancellationToken;

    /// A revocation store whose records cannot be reached. The in-process store keeps its
    /// records in memory and cannot fail, so the failure path needs this stand-in; a shared
    /// store (Redis) answers the same when its server is down.
    #[derive(Debug)]
    struct Unreachable(broadcast::Sender<RevocationEvent>);

    #[async_trait]
    impl RevocationStore for Unreachable {
        async fn check(&self, _: &Principal) -> Result<RevocationState, StoreUnavailable> {
            Err(StoreUnavailable("connection refused".into()))
        }
        async fn deny_token(
            &self,
            _: &str,
            _: i64,
            _: RevocationCause,
        ) -> Result<(), RevocationError> {
            Ok(())
        }
        async fn revoke_session(
            &self,
            _: &str,
            _: i64,
            _: RevocationCause,
        ) -> Result<(), RevocationError> {
            Ok(())
        }
        async fn revoke_user_before(
            &self,
            _: &str,
            _: i64,
            _: RevocationCause,
        ) -> Result<(), RevocationError> {
            Ok(())
        }
        async fn revoke_device(&self, _: &str, _: Option<i64>) -> Result<(), RevocationError> {
            Ok(())
        }
        async fn not_before(&self, _: &str) -> Option<i64> {
            None
        }
        fn subscribe(&self) -> broadcast::Receiver<RevocationEvent> {
            self.0.subscribe()
        }
    }

    fn keyring() -> KeyRing {
        let secret = || Secret::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let secrets = ResolvedSecrets {
            jwt: secret(),
            jwt_source: SecretSource::Environment,
            jwt_previous: vec![],
            envelope: secret(),
            envelope_source: SecretSource::Environment,
            upstream: vec![],
        };
        KeyRing::new(&Settings::default().jwt, &secrets).unwrap()
    }

    fn connection(principal: Principal) -> Arc<Connection> {
        let id = crate::auth::issue::random_id();
        Connection::new(
            id.clone(),
            id,
            Arc::from("home"),
            principal,
            8,
            &CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn an_unreachable_revocation_store_fails_closed_everywhere() {
        let ring = Arc::new(keyring());
        let claims = ring.claims("alice", vec!["user".into()], Duration::from_secs(60));
        let token = ring.issue(&claims).unwrap().token;
        let principal = ring.verify(&token).unwrap();
        assert!(principal.expires_at > unix_now());
        let auth = Authenticator::new(ring, Arc::new(Unreachable(broadcast::channel(4).0)));

        // A valid token is refused, and the request is told to retry (503), not that its
        // token is bad.
        let refused = auth.authenticate(&token).await.unwrap_err();
        assert_eq!(refused, TokenError::RevocationUnavailable);
        assert_eq!(
            RequestAuthError::refused(refused),
            RequestAuthError::StoreUnavailable
        );
        assert_eq!(
            RequestAuthError::refused(TokenError::Revoked),
            RequestAuthError::Invalid
        );

        // A connection being set up is closed...
        let connecting = connection(principal.clone());
        assert!(!admit(&auth, &connecting).await);
        assert_eq!(
            connecting.close_reason(),
            Some(&CloseReason::Revoked(UNVERIFIABLE.to_string()))
        );

        // ...and so is a live one an event names, whatever the event said.
        let live = connection(principal);
        assert_eq!(recheck(&auth, vec![live.clone()], "logged out").await, 1);
        assert_eq!(
            live.close_reason(),
            Some(&CloseReason::Revoked(UNVERIFIABLE.to_string()))
        );
    }
}
