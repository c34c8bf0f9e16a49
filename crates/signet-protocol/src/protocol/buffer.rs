//! Inbound bytes kept between transport frames until whole messages can be decoded.

use super::error::ProtocolError;

/// Capacity kept after the buffer empties; a larger one is released so an idle
/// connection does not pin the memory of the largest frame it ever received.
const RETAINED_CAPACITY: usize = 16 * 1024;

/// Bytes received but not yet decoded, shared by both framings.
///
/// Layout of `data`: `[..read]` already handed out, `[read..complete]` whole
/// messages waiting to be decoded, `[complete..]` the start of a message whose
/// end has not arrived.
#[derive(Debug, Default)]
pub(crate) struct InboundBuffer {
    data: Vec<u8>,
    read: usize,
    complete: usize,
    /// Set once a framing error broke the stream; later calls repeat it.
    failed: Option<ProtocolError>,
}

impl InboundBuffer {
    pub(crate) fn check_usable(&self) -> Result<(), ProtocolError> {
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Drops everything and remembers `error` for every later call.
    pub(crate) fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        self.data = Vec::new();
        self.read = 0;
        self.complete = 0;
        self.failed = Some(error.clone());
        error
    }

    pub(crate) fn append(&mut self, frame: &[u8]) {
        if self.read == self.data.len() {
            self.data.clear();
            if self.data.capacity() > RETAINED_CAPACITY {
                self.data = Vec::new();
            }
            self.read = 0;
            self.complete = 0;
        } else if self.read > 0 {
            // Only the unread part moves, and it is at most one partial message
            // plus whatever the caller left undrained.
            self.data.drain(..self.read);
            self.complete -= self.read;
            self.read = 0;
        }
        self.data.extend_from_slice(frame);
    }

    /// Bytes after the last complete message: a message still arriving.
    pub(crate) fn incomplete(&self) -> &[u8] {
        self.data.get(self.complete..).unwrap_or_default()
    }

    /// Marks `len` more bytes, following the current complete region, as whole messages.
    pub(crate) fn extend_complete(&mut self, len: usize) {
        self.complete = (self.complete + len).min(self.data.len());
    }

    /// Whole messages not yet handed out.
    pub(crate) fn ready(&self) -> &[u8] {
        self.data.get(self.read..self.complete).unwrap_or_default()
    }

    pub(crate) fn consume(&mut self, len: usize) {
        self.read = (self.read + len).min(self.complete);
    }

    /// The next `len` ready bytes, consumed with the `skip` bytes after them (a separator).
    pub(crate) fn take(&mut self, len: usize, skip: usize) -> &[u8] {
        let start = self.read;
        self.consume(len.saturating_add(skip));
        let end = start.saturating_add(len).min(self.read);
        self.data.get(start..end).unwrap_or_default()
    }
}
