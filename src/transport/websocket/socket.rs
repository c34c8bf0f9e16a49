//! The upgraded socket, owned by the transport once the 101 is written: read only when the
//! socket is readable, through a buffer on the stack (the heap holds only a partial frame's
//! bytes between reads), written one frame batch at a time (nothing buffered while idle).
//! Generic over the stream, so plain TCP and TLS are served alike.
//!
//! A socket's reading and writing halves are two futures joined in one task (the upgrade's):
//! they share the stream through a `RefCell` that each borrows only inside one `poll` call,
//! so the borrows never overlap.

use super::frames::{FrameReader, ReadError, Received};
use actix_codec::{AsyncRead, AsyncWrite, ReadBuf};
use bytes::{Buf, Bytes};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{ready, Poll};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The most read from the socket at once: a stack buffer, so it costs nothing between reads.
const READ_CHUNK: usize = 8 * 1024;

/// An upgraded connection's stream.
pub(crate) struct Socket<T> {
    io: RefCell<T>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Socket<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io: RefCell::new(io),
        }
    }

    /// The next message from the client: first from what `reader` holds, then from the
    /// socket. `None` once the client closed the stream. Cancel-safe: bytes read are in
    /// `reader` by the time the read completes.
    pub(crate) async fn next_message(
        &self,
        reader: &mut FrameReader,
    ) -> Option<Result<Received, ReadError>> {
        loop {
            if let Some(message) = reader.decode().transpose() {
                return Some(message);
            }
            match self.read_into(reader).await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(err) => return Some(Err(ReadError::Io(err))),
            }
        }
    }

    /// Waits until the socket is readable and hands what it has to `reader`; `false` at the
    /// end of the stream.
    async fn read_into(&self, reader: &mut FrameReader) -> io::Result<bool> {
        poll_fn(|cx| {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            let mut io = self.io.borrow_mut();
            ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(false));
            }
            reader.push(buf.filled());
            Poll::Ready(Ok(true))
        })
        .await
    }

    /// Writes `bytes` whole and flushes them (TLS holds records until flushed).
    pub(crate) async fn write(&self, mut bytes: Bytes) -> io::Result<()> {
        poll_fn(|cx| {
            let mut io = self.io.borrow_mut();
            while bytes.has_remaining() {
                let written = ready!(Pin::new(&mut *io).poll_write(cx, &bytes))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                bytes.advance(written);
            }
            Pin::new(&mut *io).poll_flush(cx)
        })
        .await
    }

    /// Ends the stream (a TLS close_notify, then the TCP FIN).
    pub(crate) async fn shut_down(&self) {
        let shut = poll_fn(|cx| Pin::new(&mut *self.io.borrow_mut()).poll_shutdown(cx)).await;
        if let Err(err) = shut {
            tracing::debug!(error = %err, "websocket shutdown failed");
        }
    }
}

/// The latest Ping's payload, for the writing half to answer (RFC 6455 5.5.3 allows answering
/// only the most recent of several Pings not answered yet).
#[derive(Debug, Default)]
pub(crate) struct Pong {
    payload: Mutex<Option<Bytes>>,
    due: Notify,
}

impl Pong {
    pub(crate) fn answer(&self, payload: Bytes) {
        match self.payload.lock() {
            Ok(mut slot) => *slot = Some(payload),
            Err(poisoned) => *poisoned.into_inner() = Some(payload),
        }
        self.due.notify_one();
    }

    /// The payload to answer, once a Ping came.
    pub(crate) async fn due(&self) -> Option<Bytes> {
        self.rung().await;
        self.take()
    }

    /// Resolves once a Ping came; then [`Pong::take`] has its payload. A writer keeps one of
    /// these across its turns instead of calling [`Pong::due`] anew at each.
    pub(crate) fn rung(&self) -> Notified<'_> {
        self.due.notified()
    }

    /// The payload of the latest Ping not answered yet.
    pub(crate) fn take(&self) -> Option<Bytes> {
        match self.payload.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{Codec, Message};
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    #[tokio::test]
    async fn a_message_split_across_many_reads_arrives_whole() {
        let (client, server) = tokio::io::duplex(64);
        let socket = Socket::new(server);
        let mut frames = BytesMut::new();
        let large = "x".repeat(3 * READ_CHUNK);
        Codec::new()
            .client_mode()
            .encode(Message::Text(large.clone().into()), &mut frames)
            .unwrap();
        let writer = tokio::spawn(async move {
            let mut client = client;
            // Small writes through a 64-byte pipe: the server reads the frame in pieces.
            for piece in frames.chunks(1000) {
                client.write_all(piece).await.unwrap();
            }
            client
        });
        let mut reader = FrameReader::new(4 * READ_CHUNK);
        let message = socket.next_message(&mut reader).await;
        assert!(
            matches!(&message, Some(Ok(Received::Text(text))) if text.as_ref() == large.as_bytes()),
            "{message:?}"
        );
        drop(writer.await.unwrap());
        assert!(socket.next_message(&mut reader).await.is_none());
    }
}
