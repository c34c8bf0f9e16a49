//! WebSocket frames on the upgraded request's body and in the response body, with actix-http's
//! codec: [`FrameReader`] turns the body into whole messages (continuations joined, sizes
//! bounded), [`encode_data`], [`encode_pong`] and [`encode_close`] write frames for the socket.
//!
//! The transport reads and writes frames itself (instead of through actix-ws) so that the
//! response body can take the connection's queue straight to the socket: no writer task and no
//! channel per socket between the queue and actix-http, and nothing buffered while idle.

use crate::protocol::HubProtocol;
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, OpCode, Parser, ProtocolError};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use tokio_util::codec::Decoder;

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// A text message (valid UTF-8), continuations joined.
    Text(Bytes),
    /// A binary message, continuations joined.
    Binary(Bytes),
    /// A Ping, to be answered with a Pong carrying the same payload.
    Ping(Bytes),
    Pong,
    /// A close frame: the client is done.
    Close,
}

/// Why the client's frames cannot be read any further.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// A frame, or a message over several frames, is larger than the transport accepts.
    #[error("a message is larger than the transport accepts")]
    TooLarge,
    /// A text message is not UTF-8.
    #[error("a text message is not valid UTF-8")]
    InvalidText,
    /// Not the WebSocket protocol (unmasked frames, bad opcodes, broken continuations...).
    #[error(transparent)]
    Protocol(ProtocolError),
    /// The request body failed (the socket broke).
    #[error("the socket failed: {0}")]
    Io(String),
}

/// The kind of a message arriving in continuation frames.
#[derive(Debug, Clone, Copy)]
enum Continued {
    Text,
    Binary,
}

/// Messages from an upgraded request's body (`web::Payload`).
pub(super) struct FrameReader<S> {
    payload: S,
    codec: Codec,
    /// Bytes read but not yet decoded; released whenever everything was decoded, so an idle
    /// socket holds no buffer here.
    buf: BytesMut,
    /// The message arriving in continuation frames, if any.
    continued: Option<(Continued, BytesMut)>,
    max_bytes: usize,
}

impl<S, E> FrameReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    /// Reads frames of at most `max_bytes`, and messages of at most `max_bytes` over several
    /// frames.
    pub(super) fn new(payload: S, max_bytes: usize) -> Self {
        Self {
            payload,
            codec: Codec::new().max_size(max_bytes),
            buf: BytesMut::new(),
            continued: None,
            max_bytes,
        }
    }

    /// The next message; `None` once the socket ended. Cancel-safe (a `select!` may drop it):
    /// what was read stays in the reader. After an error, nothing more is to be read.
    pub(super) async fn next(&mut self) -> Option<Result<Received, ReadError>> {
        loop {
            match self.decode() {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(err) => return Some(Err(err)),
            }
            match self.payload.next().await? {
                Ok(chunk) if self.buf.is_empty() => self.buf = BytesMut::from(chunk),
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(err) => return Some(Err(ReadError::Io(err.to_string()))),
            }
        }
    }

    /// The next whole message among the bytes read, if there is one.
    fn decode(&mut self) -> Result<Option<Received>, ReadError> {
        loop {
            let frame = match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return Ok(None);
                }
                Err(ProtocolError::Overflow) => return Err(ReadError::TooLarge),
                Err(err) => return Err(ReadError::Protocol(err)),
            };
            let message = match frame {
                Frame::Text(bytes) => text(bytes)?,
                Frame::Binary(bytes) => Received::Binary(bytes),
                Frame::Ping(bytes) => Received::Ping(bytes),
                Frame::Pong(_) => Received::Pong,
                Frame::Close(_) => Received::Close,
                Frame::Continuation(item) => match self.continue_with(item)? {
                    Some(message) => message,
                    None => continue,
                },
            };
            return Ok(Some(message));
        }
    }

    /// Adds a continuation frame to the message it continues; the message once it is whole.
    /// (The codec refuses continuations out of order.)
    fn continue_with(&mut self, item: Item) -> Result<Option<Received>, ReadError> {
        let (bytes, last) = match item {
            Item::FirstText(bytes) => {
                self.continued = Some((Continued::Text, BytesMut::new()));
                (bytes, false)
            }
            Item::FirstBinary(bytes) => {
                self.continued = Some((Continued::Binary, BytesMut::new()));
                (bytes, false)
            }
            Item::Continue(bytes) => (bytes, false),
            Item::Last(bytes) => (bytes, true),
        };
        let Some((kind, message)) = &mut self.continued else {
            return Err(ReadError::Protocol(ProtocolError::ContinuationNotStarted));
        };
        if message.len() + bytes.len() > self.max_bytes {
            return Err(ReadError::TooLarge);
        }
        message.extend_from_slice(&bytes);
        if !last {
            return Ok(None);
        }
        let kind = *kind;
        let message = self
            .continued
            .take()
            .map(|(_, message)| message.freeze())
            .unwrap_or_default();
        match kind {
            Continued::Text => text(message).map(Some),
            Continued::Binary => Ok(Some(Received::Binary(message))),
        }
    }
}

fn text(bytes: Bytes) -> Result<Received, ReadError> {
    match std::str::from_utf8(&bytes) {
        Ok(_) => Ok(Received::Text(bytes)),
        Err(_) => Err(ReadError::InvalidText),
    }
}

/// Appends hub protocol bytes as one frame: text for JSON (which must be UTF-8), binary for
/// MessagePack. `false` (and nothing written) for JSON bytes that are not UTF-8.
pub(super) fn encode_data(dst: &mut BytesMut, protocol: HubProtocol, bytes: &[u8]) -> bool {
    let opcode = match protocol {
        HubProtocol::Json if std::str::from_utf8(bytes).is_err() => return false,
        HubProtocol::Json => OpCode::Text,
        HubProtocol::MessagePack => OpCode::Binary,
    };
    Parser::write_message(dst, bytes, opcode, true, false);
    true
}

/// Appends the Pong answering a Ping with `payload` (RFC 6455 5.5.3).
pub(super) fn encode_pong(dst: &mut BytesMut, payload: &[u8]) {
    Parser::write_message(dst, payload, OpCode::Pong, true, false);
}

/// Appends a close frame with `code`.
pub(super) fn encode_close(dst: &mut BytesMut, code: CloseCode) {
    Parser::write_close(dst, Some(CloseReason::from(code)), false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::Message;
    use tokio_util::codec::Encoder;

    /// Frames as a client sends them (masked), in one body.
    fn client_frames(messages: Vec<Message>) -> Bytes {
        let mut codec = Codec::new().client_mode();
        let mut buf = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut buf).unwrap();
        }
        buf.freeze()
    }

    /// A reader of `body`, which arrives in chunks of 3 bytes (frames span chunks).
    fn reader(
        body: Bytes,
        max_bytes: usize,
    ) -> FrameReader<impl Stream<Item = Result<Bytes, String>> + Unpin> {
        let chunks: Vec<Result<Bytes, String>> = body
            .chunks(3)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        FrameReader::new(futures_util::stream::iter(chunks), max_bytes)
    }

    #[actix_web::test]
    async fn messages_are_read_whole_and_continuations_joined() {
        let body = client_frames(vec![
            Message::Text("one".into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Continuation(Item::FirstText(Bytes::from_static(b"tw"))),
            Message::Continuation(Item::Continue(Bytes::from_static(b"o "))),
            Message::Continuation(Item::Last(Bytes::from_static(b"parts"))),
            Message::Binary(Bytes::from_static(&[1, 2])),
            Message::Close(None),
        ]);
        let mut reader = reader(body, 1024);
        let mut read = Vec::new();
        for _ in 0..5 {
            read.push(reader.next().await.unwrap().unwrap());
        }
        assert_eq!(
            read,
            vec![
                Received::Text(Bytes::from_static(b"one")),
                Received::Ping(Bytes::from_static(b"p")),
                Received::Text(Bytes::from_static(b"two parts")),
                Received::Binary(Bytes::from_static(&[1, 2])),
                Received::Close,
            ]
        );
    }

    #[actix_web::test]
    async fn a_message_over_the_limit_in_one_frame_or_several_is_too_large() {
        let body = client_frames(vec![Message::Text("x".repeat(11).into())]);
        let one = reader(body, 10).next().await.unwrap();
        assert!(matches!(one, Err(ReadError::TooLarge)), "{one:?}");

        let body = client_frames(vec![
            Message::Continuation(Item::FirstBinary(Bytes::from(vec![0; 6]))),
            Message::Continuation(Item::Last(Bytes::from(vec![0; 6]))),
        ]);
        let several = reader(body, 10).next().await.unwrap();
        assert!(matches!(several, Err(ReadError::TooLarge)), "{several:?}");
    }

    #[actix_web::test]
    async fn text_that_is_not_utf8_is_refused() {
        let mut body = BytesMut::new();
        // The codec's Text takes a ByteString; write the frame by hand to get bad bytes in.
        Parser::write_message(&mut body, [0xff, 0xfe], OpCode::Text, true, true);
        let read = reader(body.freeze(), 10).next().await.unwrap();
        assert!(matches!(read, Err(ReadError::InvalidText)), "{read:?}");
    }

    #[actix_web::test]
    async fn the_end_of_the_body_ends_the_messages() {
        let body = client_frames(vec![Message::Text("last".into())]);
        let mut reader = reader(body, 10);
        assert!(matches!(reader.next().await, Some(Ok(Received::Text(_)))));
        assert!(reader.next().await.is_none());
    }

    #[test]
    fn frames_written_decode_as_a_client_reads_them() {
        let mut out = BytesMut::new();
        assert!(encode_data(&mut out, HubProtocol::Json, b"{}\x1e"));
        assert!(encode_data(
            &mut out,
            HubProtocol::MessagePack,
            &[0x01, 0x90]
        ));
        assert!(!encode_data(&mut out, HubProtocol::Json, &[0xff]));
        encode_pong(&mut out, b"ping");
        encode_close(&mut out, CloseCode::Size);
        let mut client = Codec::new().client_mode();
        let mut frames = Vec::new();
        while let Some(frame) = client.decode(&mut out).unwrap() {
            frames.push(format!("{frame:?}"));
        }
        assert_eq!(frames.len(), 4, "{frames:?}");
        assert!(frames[0].starts_with("Text"), "{frames:?}");
        assert!(frames[1].starts_with("Binary"), "{frames:?}");
        assert!(frames[2].starts_with("Pong"), "{frames:?}");
        assert!(frames[3].contains("Size"), "{frames:?}");
    }
}
