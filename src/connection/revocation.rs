//! Revocation reaches live connections at once: a task follows the authenticator's revocation
//! events (logout, refresh-token reuse, admin revoke, device removal or re-key), finds the
//! connections each event names through the registry's indexes, asks the revocation store
//! whether their current token is really revoked (a device re-keyed and reconnected with a
//! new token is not), and closes those with `allowReconnect: false`.

use super::{Claim, CloseReason, ConnectionRegistry};
use crate::auth::{Authenticator, RevocationEvent};
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
                recheck(&auth, connections.all(), "token revoked").await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn apply(auth: &Authenticator, connections: &ConnectionRegistry, event: &RevocationEvent) {
    let (candidates, why) = match event {
        RevocationEvent::Jti(jti) => (connections.matching(Claim::TokenId(jti)), "logged out"),
        RevocationEvent::Session(sid) => {
            (connections.matching(Claim::Session(sid)), "session revoked")
        }
        RevocationEvent::UserBefore { sub, .. } => {
            let mut found = connections.matching(Claim::Subject(sub));
            found.extend(connections.matching(Claim::Owner(sub)));
            (found, "access revoked by an administrator")
        }
        RevocationEvent::Device { sub } => (
            connections.matching(Claim::Subject(sub)),
            "device removed or re-keyed",
        ),
    };
    recheck(auth, candidates, why).await;
}

/// Asks once more, after `connection` was registered or moved onto a new token, whether that
/// token is revoked, and closes the connection at once if it is. Authentication and the
/// registry insert are two steps: a revocation landing between them finds the connection in
/// none of the indexes its event is applied through, and only this check catches it. (One
/// after the insert is enough: a revocation recorded later finds the connection indexed.)
/// Returns whether the connection stays open.
pub async fn admit(auth: &Authenticator, connection: &super::Connection) -> bool {
    if auth
        .check_revocation(&connection.principal())
        .await
        .is_err()
    {
        connection.close(CloseReason::Revoked(
            "the token was revoked while connecting".to_string(),
        ));
        return false;
    }
    true
}

async fn recheck(auth: &Authenticator, candidates: Vec<Arc<super::Connection>>, why: &str) {
    for connection in candidates {
        if auth
            .check_revocation(&connection.principal())
            .await
            .is_err()
        {
            connection.close(CloseReason::Revoked(why.to_string()));
        }
    }
}
