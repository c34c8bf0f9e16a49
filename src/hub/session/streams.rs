//! Streams in both directions: client-to-server uploads a session feeds, and the pump that
//! sends a server-to-client stream's items.

use super::send_message;
use crate::connection::Connection;
use crate::hub::method::HubError;
use crate::protocol::{HubMessage, HubProtocol};
use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Client-to-server streams open on this server, over every session: `signet_upload_streams`
/// in `/metrics`, and how tests see that finished uploads leave nothing behind.
#[derive(Debug, Default)]
pub struct OpenUploads(AtomicUsize);

impl OpenUploads {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One session's client-to-server streams by stream id, counted in [`OpenUploads`].
pub(super) struct Uploads {
    senders: HashMap<String, Upload>,
    /// Numbers each registration, so an ending invocation frees its own streams and never a
    /// later invocation's stream that reuses the id after the client completed the first.
    registered: u64,
    open: Arc<OpenUploads>,
}

struct Upload {
    registration: u64,
    sender: mpsc::Sender<Value>,
}

impl Uploads {
    pub(super) fn new(open: Arc<OpenUploads>) -> Self {
        Self {
            senders: HashMap::new(),
            registered: 0,
            open,
        }
    }

    pub(super) fn get(&self, stream_id: &str) -> Option<&mpsc::Sender<Value>> {
        self.senders.get(stream_id).map(|upload| &upload.sender)
    }

    pub(super) fn contains(&self, stream_id: &str) -> bool {
        self.senders.contains_key(stream_id)
    }

    /// Registers a stream; returns its registration, for [`Self::remove_registered`].
    pub(super) fn insert(&mut self, stream_id: String, sender: mpsc::Sender<Value>) -> u64 {
        self.registered += 1;
        let registration = self.registered;
        let upload = Upload {
            registration,
            sender,
        };
        if self.senders.insert(stream_id, upload).is_none() {
            self.open.0.fetch_add(1, Ordering::Relaxed);
        }
        registration
    }

    /// Ends a stream: dropping the sender ends the method's receiver.
    pub(super) fn remove(&mut self, stream_id: &str) {
        if self.senders.remove(stream_id).is_some() {
            self.open.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Ends a stream if it is still the one `registration` names.
    pub(super) fn remove_registered(&mut self, stream_id: &str, registration: u64) {
        if self
            .senders
            .get(stream_id)
            .is_some_and(|upload| upload.registration == registration)
        {
            self.remove(stream_id);
        }
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        self.open.0.fetch_sub(self.senders.len(), Ordering::Relaxed);
    }
}

/// Sends every item of a server-to-client stream, until it ends, the caller cancels it or the
/// connection goes (all `Ok`), or the stream fails (its error).
pub(super) async fn pump_stream(
    connection: &Connection,
    protocol: HubProtocol,
    invocation_id: &str,
    mut stream: LocalBoxStream<'static, Result<Value, HubError>>,
    cancel: &CancellationToken,
) -> Result<(), HubError> {
    loop {
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            item = stream.next() => item,
        };
        let Some(value) = item.transpose()? else {
            return Ok(());
        };
        let message = HubMessage::stream_item(invocation_id, value);
        if !send_message(connection, protocol, &message).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploads() -> (Uploads, Arc<OpenUploads>) {
        let open = Arc::new(OpenUploads::default());
        (Uploads::new(open.clone()), open)
    }

    #[test]
    fn open_uploads_count_every_registered_stream_until_it_ends() {
        let (mut uploads, open) = uploads();
        let (a, _rx_a) = mpsc::channel(1);
        let (b, _rx_b) = mpsc::channel(1);
        uploads.insert("a".into(), a);
        uploads.insert("b".into(), b);
        assert_eq!(open.get(), 2);
        assert!(uploads.contains("a") && uploads.get("b").is_some());
        uploads.remove("a");
        uploads.remove("a");
        assert_eq!(open.get(), 1);
        assert!(!uploads.contains("a"));
    }

    #[test]
    fn an_ended_invocation_frees_its_own_stream_and_never_a_reused_id() {
        let (mut uploads, open) = uploads();
        let (first, _rx1) = mpsc::channel(1);
        let old = uploads.insert("s".into(), first);
        // The client completed the first stream and a new invocation reuses its id.
        uploads.remove("s");
        let (second, _rx2) = mpsc::channel(1);
        let new = uploads.insert("s".into(), second);
        assert_ne!(old, new);
        uploads.remove_registered("s", old);
        assert!(
            uploads.contains("s"),
            "the later invocation keeps its stream"
        );
        assert_eq!(open.get(), 1);
        uploads.remove_registered("s", new);
        assert!(!uploads.contains("s"));
        assert_eq!(open.get(), 0);
    }

    #[test]
    fn a_session_that_ends_gives_back_its_open_streams() {
        let (mut uploads, open) = uploads();
        let (tx, mut rx) = mpsc::channel(1);
        uploads.insert("s".into(), tx);
        drop(uploads);
        assert_eq!(open.get(), 0);
        // Dropping the sender ends the method's receiver.
        assert!(rx.try_recv().is_err() && rx.is_closed());
    }

    #[tokio::test]
    async fn a_stream_failure_is_returned_for_the_completion_and_earlier_items_are_sent() {
        use futures_util::stream;
        let connection = super::super::test_connection();
        let items = vec![Ok(Value::from(1)), Err(HubError::hub("sensor offline"))];
        let stream = Box::pin(stream::iter(items));
        let cancel = CancellationToken::new();
        let end = pump_stream(&connection, HubProtocol::Json, "7", stream, &cancel).await;
        assert!(matches!(end, Err(HubError::Hub(text)) if text == "sensor offline"));
        let item = connection.try_recv_outbound().map(|frame| frame.to_vec());
        let item = String::from_utf8(item.unwrap_or_default()).unwrap_or_default();
        assert!(
            item.contains("\"invocationId\":\"7\"") && item.contains("\"item\":1"),
            "{item}"
        );
        assert!(
            connection.try_recv_outbound().is_none(),
            "the completion is the caller's"
        );
    }
}
