//! One connection type for every transport.
//!
//! A [`Connection`] holds the public id and secret token from negotiate, the principal and its
//! expiry, the negotiated protocol, a bounded outbound queue and a cancellation token. The
//! transport that attaches takes the queue's receiver (only one can: a second transport gets
//! 409) and drains it; the hub session feeds it. Sends from other connections (broadcasts,
//! user and group sends) use [`Connection::try_send`], which never waits: a full queue closes
//! the slow connection instead of slowing the sender.

mod close;
mod registry;
mod revocation;

pub use close::{CloseReason, CloseStats};
pub use registry::{Claim, ConnectionRegistry, RefreshError, RegistryFull};
pub use revocation::enforce_revocations;

use crate::auth::Principal;
use crate::protocol::HubProtocol;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a transport writes: one or more framed hub messages.
pub type OutboundFrame = Bytes;

/// The receiving end of a connection's outbound queue, held by the attached transport.
pub type OutboundReceiver = mpsc::Receiver<OutboundFrame>;

/// A live or negotiated hub connection.
#[derive(Debug)]
pub struct Connection {
    /// Public id, shown to the hub (`connectionId`).
    pub id: String,
    /// Secret token from negotiate (`id` on transport requests); equals `id` for negotiate v0.
    pub token: String,
    /// Hub name, e.g. `home`.
    pub hub: Arc<str>,
    principal: RwLock<Arc<Principal>>,
    expires_at: AtomicI64,
    protocol: OnceLock<HubProtocol>,
    outbound: mpsc::Sender<OutboundFrame>,
    outbound_rx: Mutex<Option<OutboundReceiver>>,
    cancel: CancellationToken,
    close_reason: OnceLock<CloseReason>,
    transport_attached: AtomicBool,
    expiry_changed: tokio::sync::Notify,
}

/// Why a send did not reach the connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the connection is closed")]
    Closed,
    #[error("the connection's outbound queue is full")]
    Full,
}

impl Connection {
    /// A new connection for `principal`, cancelled with `parent` (the server's shutdown token).
    pub fn new(
        id: String,
        token: String,
        hub: Arc<str>,
        principal: Principal,
        queue_capacity: usize,
        parent: &CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        Arc::new(Self {
            id,
            token,
            hub,
            expires_at: AtomicI64::new(principal.expires_at),
            principal: RwLock::new(Arc::new(principal)),
            protocol: OnceLock::new(),
            outbound: tx,
            outbound_rx: Mutex::new(Some(rx)),
            cancel: parent.child_token(),
            close_reason: OnceLock::new(),
            transport_attached: AtomicBool::new(false),
            expiry_changed: tokio::sync::Notify::new(),
        })
    }

    /// The principal of the token currently backing this connection.
    pub fn principal(&self) -> Arc<Principal> {
        match self.principal.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the principal after an in-band token refresh (same `sub`, checked by the caller).
    pub fn set_principal(&self, principal: Principal) {
        self.expires_at
            .store(principal.expires_at, Ordering::Release);
        let principal = Arc::new(principal);
        match self.principal.write() {
            Ok(mut guard) => *guard = principal,
            Err(poisoned) => *poisoned.into_inner() = principal,
        }
        // One session waits on this; a permit is kept if it is busy right now.
        self.expiry_changed.notify_one();
    }

    /// Resolves after the principal (and so the expiry) changed.
    pub async fn expiry_changed(&self) {
        self.expiry_changed.notified().await
    }

    /// Token expiry, Unix seconds.
    pub fn expires_at(&self) -> i64 {
        self.expires_at.load(Ordering::Acquire)
    }

    /// The protocol chosen in the handshake, once it has happened.
    pub fn protocol(&self) -> Option<HubProtocol> {
        self.protocol.get().copied()
    }

    pub fn set_protocol(&self, protocol: HubProtocol) {
        let _ = self.protocol.set(protocol);
    }

    /// Marks a transport as attached. False if one already was (the caller answers 409).
    pub fn attach_transport(&self) -> bool {
        !self.transport_attached.swap(true, Ordering::AcqRel)
    }

    pub fn is_attached(&self) -> bool {
        self.transport_attached.load(Ordering::Acquire)
    }

    /// Takes the outbound queue's receiver; `None` if a transport holds it.
    pub fn take_outbound(&self) -> Option<OutboundReceiver> {
        self.outbound_rx.lock().ok()?.take()
    }

    /// Gives the receiver back (long polling hands it from one poll to the next).
    pub fn return_outbound(&self, rx: OutboundReceiver) {
        if let Ok(mut slot) = self.outbound_rx.lock() {
            *slot = Some(rx);
        }
    }

    /// Queues bytes without waiting. A full queue closes this connection as too slow, so that
    /// no sender is ever held up by it.
    pub fn try_send(&self, frame: OutboundFrame) -> Result<(), SendError> {
        if self.cancel.is_cancelled() {
            return Err(SendError::Closed);
        }
        match self.outbound.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::SlowConsumer);
                Err(SendError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Queues bytes of this connection's own replies and stream items, waiting for room: the
    /// only one held up is the connection itself (its reader stops while it waits).
    pub async fn send(&self, frame: OutboundFrame) -> Result<(), SendError> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(SendError::Closed),
            sent = self.outbound.send(frame) => sent.map_err(|_| SendError::Closed),
        }
    }

    /// Closes the connection; the first reason given is the one reported.
    pub fn close(&self, reason: CloseReason) {
        if self.close_reason.set(reason.clone()).is_ok() {
            tracing::debug!(connection = %self.id, reason = reason.code(), "closing connection");
        }
        self.cancel.cancel();
    }

    /// The reason the connection closed (or is closing), if it did.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.get()
    }

    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the connection is closing, for any reason.
    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// A token cancelled with this connection, for tasks that outlive a borrow of it.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}
