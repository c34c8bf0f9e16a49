//! How long a connection lives without a transport, and when it leaves the registry: one task
//! per connection, whatever the transport.
//!
//! 1. A negotiated connection that no transport attaches to within the negotiate timeout is
//!    dropped.
//! 2. While it is open, each time its transport lets go: a connection that cannot resume
//!    (Server-Sent Events, a WebSocket without stateful reconnect) closes; one that can (long
//!    polling, a WebSocket with stateful reconnect) waits for the next transport for the
//!    disconnect timeout, and closes if none comes.
//! 3. Once closed it leaves the registry. A resumable connection that closed while no transport
//!    was attached, with something to tell its client (the Close message of an expiry, a kick,
//!    a shutdown), stays findable for the disconnect timeout so that the next poll or
//!    reconnecting WebSocket can collect it.

use super::{CloseReason, Connection, ConnectionRegistry};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

/// The timeouts [`supervise`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From negotiate to the first transport request.
    pub negotiate: Duration,
    /// From a resumable transport letting go to the next one attaching.
    pub disconnect: Duration,
}

/// Runs for the whole life of `connection`; ends once it has left `registry`.
pub async fn supervise(
    connection: Arc<Connection>,
    registry: Arc<ConnectionRegistry>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    watch_transports(&connection, timeouts).await;
    Box::pin(linger(&connection, timeouts, &shutdown)).await;
    registry.remove(&connection.token);
}

/// Phases 1 and 2: returns once the connection is closed.
///
/// Each wait is boxed: a task is as large as the largest state of its future, and a connection
/// spends its life in the smallest one (attached, waiting for its transport to let go), which
/// then is all its supervisor holds.
async fn watch_transports(connection: &Connection, timeouts: Timeouts) {
    if !Box::pin(attached_within(
        connection,
        timeouts.negotiate,
        "negotiate timeout",
    ))
    .await
    {
        return;
    }
    loop {
        if !Box::pin(detached(connection)).await {
            return;
        }
        if !connection.is_resumable() {
            // The transport usually closed it already, with a more precise reason.
            connection.close(CloseReason::ClientClosed);
            return;
        }
        let back = attached_within(connection, timeouts.disconnect, "disconnect timeout");
        if !Box::pin(back).await {
            return;
        }
    }
}

/// Waits for a transport to attach; if none does within `timeout`, closes the connection.
/// `false` once the connection is closed.
async fn attached_within(connection: &Connection, timeout: Duration, what: &str) -> bool {
    let mut attached = connection.watch_attached();
    tokio::select! {
        biased;
        _ = connection.closed() => false,
        changed = attached.wait_for(|a| *a) => changed.is_ok(),
        _ = sleep(timeout) => {
            tracing::debug!(connection = %connection.log_id(), "no transport came within the {what}");
            connection.close(CloseReason::TransportTimeout);
            false
        }
    }
}

/// Waits for the attached transport to let go. `false` once the connection is closed.
async fn detached(connection: &Connection) -> bool {
    let mut attached = connection.watch_attached();
    tokio::select! {
        biased;
        _ = connection.closed() => false,
        changed = attached.wait_for(|a| !*a) => changed.is_ok(),
    }
}

/// Phase 3: gives a resumable client that is between transports the chance to collect the
/// Close message.
async fn linger(connection: &Connection, timeouts: Timeouts, shutdown: &CancellationToken) {
    if connection.is_attached() || !connection.has_close_message() || !connection.is_resumable() {
        return;
    }
    let mut attached = connection.watch_attached();
    let collected = async {
        if attached.wait_for(|a| *a).await.is_ok() {
            let _ = attached.wait_for(|a| !*a).await;
        }
    };
    tokio::select! {
        _ = collected => {}
        _ = sleep(timeouts.disconnect) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::TransportKind;
    use tokio::time::Instant;

    const TIMEOUTS: Timeouts = Timeouts {
        negotiate: Duration::from_secs(10),
        disconnect: Duration::from_secs(15),
    };

    /// A registered connection and its supervisor, started now.
    fn supervised() -> (
        Arc<Connection>,
        Arc<ConnectionRegistry>,
        tokio::task::JoinHandle<()>,
    ) {
        let shutdown = CancellationToken::new();
        let connection = Connection::for_tests(i64::MAX);
        let registry = Arc::new(ConnectionRegistry::new(10, 10));
        registry.insert(connection.clone()).unwrap();
        let task = tokio::spawn(supervise(
            connection.clone(),
            registry.clone(),
            TIMEOUTS,
            shutdown,
        ));
        (connection, registry, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_no_transport_attaches_to_is_dropped_after_the_negotiate_timeout() {
        let started = Instant::now();
        let (connection, registry, task) = supervised();
        task.await.unwrap();
        assert_eq!(started.elapsed(), TIMEOUTS.negotiate);
        assert_eq!(
            connection.close_reason(),
            Some(&CloseReason::TransportTimeout)
        );
        assert!(registry.get(&connection.token).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumable_connection_waits_the_disconnect_timeout_for_its_next_transport() {
        let (connection, registry, task) = supervised();
        connection
            .set_transport(TransportKind::LongPolling)
            .unwrap();
        let poll = connection.attach_replacing().await.unwrap();
        // Attached, the negotiate timeout no longer applies.
        tokio::time::sleep(TIMEOUTS.negotiate * 3).await;
        drop(poll);
        // A poll that comes back within the disconnect timeout keeps it.
        tokio::time::sleep(TIMEOUTS.disconnect - Duration::from_secs(1)).await;
        assert!(!connection.is_closed());
        let poll = connection.attach_replacing().await.unwrap();
        tokio::time::sleep(TIMEOUTS.disconnect * 2).await;
        assert!(!connection.is_closed());
        drop(poll);
        // One that does not finds it gone.
        let left = Instant::now();
        task.await.unwrap();
        assert_eq!(left.elapsed(), TIMEOUTS.disconnect);
        assert_eq!(
            connection.close_reason(),
            Some(&CloseReason::TransportTimeout)
        );
        assert!(registry.get(&connection.token).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_cannot_resume_closes_when_its_transport_lets_go() {
        let (connection, registry, task) = supervised();
        connection
            .set_transport(TransportKind::ServerSentEvents)
            .unwrap();
        let stream = connection.attach().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let left = Instant::now();
        drop(stream);
        task.await.unwrap();
        assert_eq!(left.elapsed(), Duration::ZERO);
        assert_eq!(connection.close_reason(), Some(&CloseReason::ClientClosed));
        assert!(registry.get(&connection.token).is_none());
    }
}
