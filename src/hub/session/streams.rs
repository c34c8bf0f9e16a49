//! Streams in both directions: client-to-server uploads a session feeds, and the pump that
//! sends a server-to-client stream's items.

use super::send_message;
use crate::connection::Connection;
use crate::hub::method::HubError;
use crate::protocol::{CompletionResult, HubMessage, HubProtocol};
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

/// Sends every item of a server-to-client stream, until it ends or the caller cancels it.
pub(super) async fn pump_stream(
    connection: &Connection,
    protocol: HubProtocol,
    invocation_id: &str,
    mut stream: futures_util::stream::LocalBoxStream<'static, Result<Value, HubError>>,
    cancel: &CancellationToken,
    target: &str,
    detailed: bool,
) -> CompletionResult {
    loop {
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => return CompletionResult::Void,
            item = stream.next() => item,
        };
        match item {
            None => return CompletionResult::Void,
            Some(Ok(value)) => {
                let message = HubMessage::stream_item(invocation_id, value);
                if !send_message(connection, protocol, &message).await {
                    return CompletionResult::Void;
                }
            }
            Some(Err(err)) => {
                let text = match err {
                    HubError::Hub(_) | HubError::Exact(_) => err.completion_text(target, detailed),
                    _ if detailed => format!(
                        "An error occurred on the server while streaming results. Exception: {err}"
                    ),
                    _ => "An error occurred on the server while streaming results.".to_string(),
                };
                return CompletionResult::Error(text);
            }
        }
    }
}
