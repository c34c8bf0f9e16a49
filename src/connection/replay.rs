//! Stateful reconnect bookkeeping (HubProtocol.md, "Stateful Reconnect"), both directions.
//!
//! Only trackable messages (types 1 to 5) are numbered, from 1, by each side for what it sends.
//! Outbound, [`ReplayBuffer`] keeps every trackable frame the transport took until the client
//! acknowledges it with an Ack; after a dropped WebSocket comes back, the server sends a
//! Sequence message naming the first kept frame, then the kept frames, then carries on with its
//! queue. Inbound, [`ReceivedSequence`] counts what arrived so that the frames a client resends
//! after its own Sequence message are recognised as duplicates and skipped.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// Trackable frames sent but not yet acknowledged, bounded in bytes.
///
/// When the buffer holds `limit` bytes or more the transport stops taking frames until an Ack
/// frees room (ASP.NET Core's back-pressure): the connection's queue then fills, and a full
/// queue closes a client that does not keep up, as it would without stateful reconnect.
#[derive(Debug)]
pub struct ReplayBuffer {
    limit: usize,
    state: Mutex<ReplayState>,
    acked: Notify,
}

#[derive(Debug, Default)]
struct ReplayState {
    /// Trackable frames sent so far; the last one sent carries this id.
    sent: u64,
    /// Unacknowledged frames with their sequence ids, oldest first.
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl ReplayBuffer {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            state: Mutex::new(ReplayState::default()),
            acked: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Numbers a trackable frame that is being sent and keeps it until acknowledged.
    pub fn record(&self, frame: Bytes) -> u64 {
        let mut state = self.state();
        state.sent += 1;
        let id = state.sent;
        state.bytes += frame.len();
        state.frames.push_back((id, frame));
        id
    }

    /// The client received every frame up to `sequence_id`: they are dropped. Ids beyond what
    /// was sent are taken as "everything" (a client cannot acknowledge the future).
    pub fn acknowledge(&self, sequence_id: u64) {
        let mut state = self.state();
        while let Some((id, frame)) = state.frames.front() {
            if *id > sequence_id {
                break;
            }
            let len = frame.len();
            state.bytes -= len;
            state.frames.pop_front();
        }
        drop(state);
        self.acked.notify_waiters();
    }

    /// Whether the transport must wait for an Ack before sending more.
    pub fn is_full(&self) -> bool {
        self.state().bytes >= self.limit
    }

    /// Bytes kept for replay.
    pub fn buffered_bytes(&self) -> usize {
        self.state().bytes
    }

    /// Resolves once the buffer has room for more frames.
    pub async fn room(&self) {
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            // Registered before the check, so an Ack between the check and the wait is not lost.
            acked.as_mut().enable();
            if !self.is_full() {
                return;
            }
            acked.await;
        }
    }

    /// What a resumed transport sends first: the id for the Sequence message (the oldest kept
    /// frame's, or the next one to be sent when nothing is kept), and the kept frames in order.
    pub fn resend(&self) -> (u64, Vec<Bytes>) {
        let state = self.state();
        let first = state.frames.front().map_or(state.sent + 1, |(id, _)| *id);
        (first, state.frames.iter().map(|(_, f)| f.clone()).collect())
    }
}

/// What the server received of the client's trackable messages.
#[derive(Debug)]
pub struct ReceivedSequence {
    /// The id the next trackable message from the client carries.
    next: u64,
    /// The highest id processed.
    latest: u64,
    /// The highest id the server acknowledged.
    acked: u64,
    /// After a resume, everything before the client's Sequence message is ignored.
    awaiting_sequence: bool,
}

/// The client's Sequence message named an id past what the server received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Sequence ID greater than amount of messages we've received.")]
pub struct SequenceAhead;

impl Default for ReceivedSequence {
    fn default() -> Self {
        Self {
            next: 1,
            latest: 0,
            acked: 0,
            awaiting_sequence: false,
        }
    }
}

impl ReceivedSequence {
    /// The transport came back: ignore what arrives until the client's Sequence message.
    pub fn resumed(&mut self) {
        self.awaiting_sequence = true;
    }

    /// Whether an incoming message is to be processed: `false` for a duplicate or for anything
    /// before the Sequence message that follows a resume. `trackable` and `is_sequence`
    /// describe the message.
    pub fn accept(&mut self, trackable: bool, is_sequence: bool) -> bool {
        if self.awaiting_sequence {
            if is_sequence {
                self.awaiting_sequence = false;
            }
            return is_sequence;
        }
        if !trackable {
            return true;
        }
        let id = self.next;
        self.next += 1;
        if id <= self.latest {
            return false;
        }
        self.latest = id;
        true
    }

    /// The client's Sequence message: its next trackable message carries `sequence_id`.
    pub fn reset(&mut self, sequence_id: u64) -> Result<(), SequenceAhead> {
        if sequence_id > self.next {
            return Err(SequenceAhead);
        }
        self.next = sequence_id;
        Ok(())
    }

    /// The id to acknowledge, if anything arrived since the last Ack.
    pub fn ack_due(&mut self) -> Option<u64> {
        (self.latest > self.acked).then(|| {
            self.acked = self.latest;
            self.latest
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn frames_are_numbered_kept_and_dropped_when_acknowledged() {
        let buffer = ReplayBuffer::new(100);
        assert_eq!(buffer.resend(), (1, vec![]));
        assert_eq!(buffer.record(frame(10)), 1);
        assert_eq!(buffer.record(frame(20)), 2);
        assert_eq!(buffer.record(frame(30)), 3);
        assert_eq!(buffer.buffered_bytes(), 60);
        buffer.acknowledge(2);
        let (first, frames) = buffer.resend();
        assert_eq!(first, 3);
        assert_eq!(frames, vec![frame(30)]);
        buffer.acknowledge(99);
        assert_eq!(buffer.resend(), (4, vec![]));
        assert_eq!(buffer.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn a_full_buffer_waits_for_an_ack() {
        let buffer = std::sync::Arc::new(ReplayBuffer::new(25));
        buffer.record(frame(20));
        assert!(!buffer.is_full());
        buffer.record(frame(10));
        assert!(buffer.is_full());
        let waiting = tokio::spawn({
            let buffer = buffer.clone();
            async move { buffer.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        buffer.acknowledge(1);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("room after the ack")
            .unwrap();
    }

    #[test]
    fn duplicates_after_a_resume_are_skipped() {
        let mut received = ReceivedSequence::default();
        // Messages 1..=3 arrive; the server acknowledges 2 of them before the socket drops.
        assert!(received.accept(true, false));
        assert!(received.accept(true, false));
        assert_eq!(received.ack_due(), Some(2));
        assert!(received.accept(true, false));
        assert!(received.accept(false, false), "pings are never numbered");
        received.resumed();
        // Anything before the Sequence message is ignored.
        assert!(!received.accept(true, false));
        assert!(received.accept(false, true));
        // The client resends from 3 (unacknowledged), then sends 4.
        received.reset(3).unwrap();
        assert!(!received.accept(true, false), "3 is a duplicate");
        assert!(received.accept(true, false), "4 is new");
        assert_eq!(received.ack_due(), Some(4));
        assert_eq!(received.ack_due(), None);
    }

    #[test]
    fn a_sequence_past_what_arrived_is_refused() {
        let mut received = ReceivedSequence::default();
        assert!(received.accept(true, false));
        assert_eq!(received.reset(3), Err(SequenceAhead));
        assert_eq!(received.reset(2), Ok(()));
    }
}
