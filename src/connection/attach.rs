//! Transports attaching to a connection and letting go of it.
//!
//! An [`Attachment`] is the outbound queue's one consumer (it holds a lock) for as long as a
//! transport writes to the client: a WebSocket or an SSE response for their lifetime, a long
//! poll for one request. It is also where what a transport writes is decided once for all of
//! them: after a stateful-reconnect resume the Sequence message and the unacknowledged frames
//! come first; each trackable frame taken is kept for replay; and once the connection closes,
//! [`Attachment::closing_frames`] gives what is left to flush and the Close message.

use super::{CloseReason, Connection};
use crate::protocol::HubMessage;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

/// How long a transport waits for an attached one that is already letting go: a client whose
/// WebSocket the server just cut may be back before the old socket is torn down. Not a
/// setting: it covers the server's own teardown of a transport it has already ended (no client
/// can stretch it), which takes milliseconds; the bound only keeps a bug from hanging a request.
const RELEASE_GRACE: Duration = Duration::from_secs(2);

/// Why a transport could not attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Another transport is attached (409).
    #[error("another transport is attached to this connection")]
    InUse,
    /// A newer long poll arrived while this one waited (204).
    #[error("a newer request replaced this one")]
    Superseded,
}

/// The attachment bookkeeping of one connection.
#[derive(Debug)]
pub(super) struct AttachState {
    pub(super) attached: watch::Sender<bool>,
    ever_attached: AtomicBool,
    close_delivered: AtomicBool,
    /// Long polls arrived so far; a waiting poll that is not the latest gives up.
    requests: AtomicU64,
    /// Transports attached so far (a long poll counts once per request).
    attachments: AtomicU64,
    current: Mutex<Option<(u64, CancellationToken)>>,
}

impl Default for AttachState {
    fn default() -> Self {
        Self {
            attached: watch::channel(false).0,
            ever_attached: AtomicBool::new(false),
            close_delivered: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            attachments: AtomicU64::new(0),
            current: Mutex::new(None),
        }
    }
}

impl AttachState {
    pub(super) fn ever_attached(&self) -> bool {
        self.ever_attached.load(Ordering::Acquire)
    }

    pub(super) fn close_delivered(&self) -> bool {
        self.close_delivered.load(Ordering::Acquire)
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<(u64, CancellationToken)>> {
        match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// An attached transport that is not already ending.
    fn has_live(&self) -> bool {
        self.current()
            .as_ref()
            .is_some_and(|(_, token)| !token.is_cancelled())
    }

    fn end_current(&self) {
        if let Some((_, token)) = self.current().as_ref() {
            token.cancel();
        }
    }
}

impl Connection {
    /// Attaches a transport that must be the only one (WebSockets, Server-Sent Events):
    /// [`AttachError::InUse`] while another is attached, unless that one is already letting go.
    pub async fn attach(self: &Arc<Self>) -> Result<Attachment, AttachError> {
        let receiver = match self.outbound_taker.clone().try_lock_owned() {
            Ok(receiver) => receiver,
            Err(_) if self.attach.has_live() => return Err(AttachError::InUse),
            Err(_) => tokio::time::timeout(RELEASE_GRACE, self.outbound_taker.clone().lock_owned())
                .await
                .map_err(|_| AttachError::InUse)?,
        };
        Ok(self.attached_with(receiver, 0))
    }

    /// Attaches a long poll: the poll attached now, if any, is ended (it answers 204) and this
    /// one takes over once it has let go. [`AttachError::Superseded`] if an even newer poll
    /// arrived meanwhile.
    pub async fn attach_replacing(self: &Arc<Self>) -> Result<Attachment, AttachError> {
        let request = self.attach.requests.fetch_add(1, Ordering::AcqRel) + 1;
        self.attach.end_current();
        let receiver = self.outbound_taker.clone().lock_owned().await;
        if self.attach.requests.load(Ordering::Acquire) != request {
            return Err(AttachError::Superseded);
        }
        Ok(self.attached_with(receiver, request))
    }

    /// How many transports have attached so far, a long poll once per request: lets an
    /// observer wait until a request it made has reached the connection.
    pub fn attachments(&self) -> u64 {
        self.attach.attachments.load(Ordering::Acquire)
    }

    /// Ends the attached transport, if any, as if its client had gone away: the connection
    /// then follows its reconnect rules ([`Connection::is_resumable`]).
    pub fn end_attachment(&self) {
        self.attach.end_current();
    }

    fn attached_with(self: &Arc<Self>, receiver: OwnedMutexGuard<()>, request: u64) -> Attachment {
        let ended = self.cancellation().child_token();
        *self.attach.current() = Some((request, ended.clone()));
        self.attach.attachments.fetch_add(1, Ordering::AcqRel);
        let first = !self.attach.ever_attached.swap(true, Ordering::AcqRel);
        self.attach.attached.send_replace(true);
        let mut pending = VecDeque::new();
        let mut resumed = false;
        if let (false, Some(replay), Some(protocol)) = (first, self.replay(), self.protocol()) {
            let (sequence_id, frames) = replay.resend();
            match protocol.encode_to_bytes(&HubMessage::Sequence { sequence_id }) {
                Ok(sequence) => {
                    pending.push_back(sequence);
                    pending.extend(frames);
                    resumed = true;
                }
                Err(err) => tracing::error!(error = %err, "cannot encode a Sequence message"),
            }
        }
        Attachment {
            connection: self.clone(),
            _taker: receiver,
            ended,
            resumed,
            pending,
        }
    }
}

/// A transport's hold on a connection's outbound traffic. Dropping it detaches the transport.
#[derive(Debug)]
pub struct Attachment {
    connection: Arc<Connection>,
    /// The lock that makes this attachment the outbound queue's one consumer.
    _taker: OwnedMutexGuard<()>,
    ended: CancellationToken,
    resumed: bool,
    /// Written before the queue: the Sequence message and the replay after a resume.
    pending: VecDeque<Bytes>,
}

impl Attachment {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// A stateful-reconnect resume: the session expects the client's Sequence message.
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// Cancelled when the attachment ends: ended by a newer poll, a DELETE, the server, the
    /// transport itself ([`Attachment::end`]), or the connection closing.
    pub fn ending(&self) -> CancellationToken {
        self.ended.clone()
    }

    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Ends this attachment; what is queued stays for the next transport.
    pub fn end(&self) {
        self.ended.cancel();
    }

    /// The next frame to write, waiting for one; `None` once the attachment ends.
    pub async fn next(&mut self) -> Option<Bytes> {
        let ending = self.ended.clone();
        let ended = ending.cancelled();
        tokio::pin!(ended);
        self.next_unless(ended).await
    }

    /// [`Attachment::next`], with the wait for this attachment's end (`self.ending()
    /// .cancelled()`) made by the caller: a writer keeps one across its turns instead of
    /// registering and unregistering a new one for every frame.
    async fn next_unless(
        &mut self,
        mut ended: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Bytes> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        if let Some(replay) = self.connection.replay() {
            tokio::select! {
                biased;
                () = &mut ended => return None,
                _ = replay.room() => {}
            }
        }
        let frame = tokio::select! {
            biased;
            () = &mut ended => return None,
            frame = self.connection.outbound.pop() => frame,
        };
        self.track(&frame);
        Some(frame)
    }

    /// The next frame if one is ready now.
    pub fn try_next(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        if self.ended.is_cancelled() || self.connection.replay().is_some_and(|r| r.is_full()) {
            return None;
        }
        let frame = self.connection.outbound.try_pop()?;
        self.track(&frame);
        Some(frame)
    }

    /// The next frame and whatever else is ready, concatenated up to about `max_bytes`.
    pub async fn next_batch(&mut self, max_bytes: usize) -> Option<Bytes> {
        let ending = self.ended.clone();
        let ended = ending.cancelled();
        tokio::pin!(ended);
        self.next_batch_unless(max_bytes, ended).await
    }

    /// [`Attachment::next_batch`] with the wait for the end made by the caller (see
    /// [`Attachment::next_unless`]): `ended` must resolve once `self.ending()` is cancelled.
    pub async fn next_batch_unless(
        &mut self,
        max_bytes: usize,
        ended: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Bytes> {
        let first = self.next_unless(ended).await?;
        if first.len() >= max_bytes {
            return Some(first);
        }
        let Some(second) = self.try_next() else {
            return Some(first);
        };
        let mut batch = BytesMut::with_capacity(first.len() + second.len());
        batch.extend_from_slice(&first);
        batch.extend_from_slice(&second);
        while batch.len() < max_bytes {
            match self.try_next() {
                Some(frame) => batch.extend_from_slice(&frame),
                None => break,
            }
        }
        Some(batch.freeze())
    }

    /// Keeps a trackable frame for replay when stateful reconnect is on.
    fn track(&self, frame: &Bytes) {
        let (Some(replay), Some(protocol)) = (self.connection.replay(), self.connection.protocol())
        else {
            return;
        };
        if protocol
            .message_type_of(frame)
            .is_some_and(|kind| kind.is_trackable())
        {
            replay.record(frame.clone());
        }
    }

    /// Once the connection has closed: what is left to write, once per connection. That is
    /// the queued frames (unless the client was too slow to take them) and the Close message
    /// when the reason has something to tell ([`CloseReason::close_error`]).
    pub fn closing_frames(&mut self) -> Vec<Bytes> {
        let connection = self.connection.clone();
        if connection
            .attach
            .close_delivered
            .swap(true, Ordering::AcqRel)
        {
            return Vec::new();
        }
        let reason = connection
            .close_reason()
            .cloned()
            .unwrap_or(CloseReason::Shutdown);
        let mut frames: Vec<Bytes> = self.pending.drain(..).collect();
        if reason != CloseReason::SlowConsumer {
            while let Some(frame) = self.connection.outbound.try_pop() {
                frames.push(frame);
            }
        }
        if let (Some(protocol), Some(error)) = (connection.protocol(), reason.close_error()) {
            let close = HubMessage::close(Some(error), reason.allow_reconnect());
            match protocol.encode_to_bytes(&close) {
                Ok(bytes) => frames.push(bytes),
                Err(err) => tracing::error!(error = %err, "cannot encode a Close message"),
            }
        }
        frames
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.ended.cancel();
        let state = &self.connection.attach;
        // Still holding the receiver, so the slot is this attachment's, and a waiting transport
        // attaches only after this.
        *state.current() = None;
        state.attached.send_replace(false);
    }
}

/// Concatenates frames into batches of about `max_bytes` (one frame may exceed it alone).
pub fn coalesce(frames: Vec<Bytes>, max_bytes: usize) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut batch = BytesMut::new();
    for frame in frames {
        if !batch.is_empty() && batch.len() + frame.len() > max_bytes {
            batches.push(batch.split().freeze());
        }
        batch.extend_from_slice(&frame);
    }
    if !batch.is_empty() {
        batches.push(batch.freeze());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::TransportKind;
    use crate::protocol::HubProtocol;

    fn connection() -> Arc<Connection> {
        Connection::for_tests(i64::MAX)
    }

    fn invocation(n: u64) -> Bytes {
        HubProtocol::Json
            .encode_to_bytes(&HubMessage::invocation("Tick", vec![n.into()]))
            .unwrap()
    }

    #[tokio::test]
    async fn a_second_exclusive_transport_is_refused_until_the_first_lets_go() {
        let connection = connection();
        let first = connection.attach().await.unwrap();
        assert!(connection.is_attached());
        assert_eq!(connection.attach().await.unwrap_err(), AttachError::InUse);
        drop(first);
        assert!(!connection.is_attached());
        let second = connection.attach().await.unwrap();
        assert!(!second.is_resumed(), "no stateful reconnect");
    }

    #[tokio::test]
    async fn a_newer_poll_ends_the_older_one() {
        let connection = connection();
        let older = connection.attach_replacing().await.unwrap();
        let ending = older.ending();
        let newer = tokio::spawn({
            let connection = connection.clone();
            async move { connection.attach_replacing().await.map(|_| ()) }
        });
        ending.cancelled().await;
        drop(older);
        newer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_resume_replays_unacknowledged_frames_after_a_sequence_message() {
        let connection = connection();
        connection.set_transport(TransportKind::WebSockets).unwrap();
        connection.set_protocol(HubProtocol::Json);
        connection.request_stateful_reconnect();
        assert!(connection.start_stateful_reconnect(2, 10_000));
        for n in 1..=3 {
            connection.try_send(invocation(n)).unwrap();
        }
        connection
            .try_send(Bytes::from_static(HubProtocol::Json.ping_frame()))
            .unwrap();
        let mut attachment = connection.attach().await.unwrap();
        for _ in 0..4 {
            attachment.next().await.unwrap();
        }
        // The client acknowledged the first invocation before the socket dropped.
        connection.acknowledge(1);
        drop(attachment);
        connection.try_send(invocation(4)).unwrap();

        let mut resumed = connection.attach().await.unwrap();
        assert!(resumed.is_resumed());
        let sequence = HubProtocol::Json
            .encode_to_bytes(&HubMessage::Sequence { sequence_id: 2 })
            .unwrap();
        assert_eq!(resumed.next().await.unwrap(), sequence);
        assert_eq!(resumed.next().await.unwrap(), invocation(2));
        assert_eq!(resumed.next().await.unwrap(), invocation(3));
        assert_eq!(resumed.next().await.unwrap(), invocation(4));
        assert!(resumed.try_next().is_none());
        assert_eq!(connection.replay().unwrap().resend().0, 2);
    }

    #[tokio::test]
    async fn closing_frames_flush_the_queue_and_say_why_once() {
        let connection = connection();
        connection.set_protocol(HubProtocol::Json);
        connection.try_send(invocation(1)).unwrap();
        let mut attachment = connection.attach().await.unwrap();
        connection.close(CloseReason::Expired);
        assert!(attachment.next().await.is_none());
        let frames = attachment.closing_frames();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], invocation(1));
        assert_eq!(
            &frames[1][..],
            b"{\"type\":7,\"error\":\"Authentication expired\",\"allowReconnect\":true}\x1e"
        );
        assert!(attachment.closing_frames().is_empty());
    }

    #[test]
    fn frames_are_coalesced_up_to_the_limit() {
        let frames = vec![Bytes::from_static(b"aaaa"); 5];
        let batches = coalesce(frames, 10);
        assert_eq!(batches.len(), 3);
        assert_eq!(&batches[0][..], b"aaaaaaaa");
        assert_eq!(&batches[2][..], b"aaaa");
        assert!(coalesce(Vec::new(), 10).is_empty());
    }
}
