//! WebSocket frames on the upgraded socket, with actix-http's codec: [`FrameReader`] turns
//! the bytes read into whole messages (continuations joined, sizes bounded), [`encode_data`],
//! [`encode_pong`] and [`encode_close`] write frames for the socket.
//!
//! The transport reads and writes frames itself, on the raw socket (`socket.rs`), so that it
//! holds no buffer while the socket is idle and writes the connection's queue straight to the
//! socket.

use crate::protocol::HubProtocol;
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, OpCode, Parser, ProtocolError};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// A whole message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
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
pub(crate) enum ReadError {
    /// A frame, or a message over several frames, is larger than the transport accepts.
    #[error("a message is larger than the transport accepts")]
    TooLarge,
    /// A text message is not UTF-8.
    #[error("a text message is not valid UTF-8")]
    InvalidText,
    /// Not the WebSocket protocol (unmasked frames, bad opcodes, broken continuations...).
    #[error(transparent)]
    Protocol(ProtocolError),
    /// The socket failed.
    #[error("the socket failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The kind of a message arriving in continuation frames.
#[derive(Debug, Clone, Copy)]
enum Continued {
    Text,
    Binary,
}

/// Messages from the bytes read on a socket.
pub(crate) struct FrameReader {
    codec: Codec,
    /// Bytes read but not yet decoded (at most a partial frame once [`FrameReader::decode`]
    /// returns `None`); released whenever everything was decoded, so an idle socket holds no
    /// buffer here.
    buf: BytesMut,
    /// The message arriving in continuation frames, if any.
    continued: Option<(Continued, BytesMut)>,
    max_bytes: usize,
}

impl FrameReader {
    /// Reads frames of at most `max_bytes`, and messages of at most `max_bytes` over several
    /// frames.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            codec: Codec::new().max_size(max_bytes),
            buf: BytesMut::new(),
            continued: None,
            max_bytes,
        }
    }

    /// Adds bytes read from the socket.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message among the bytes read, if there is one.
    pub(crate) fn decode(&mut self) -> Result<Option<Received>, ReadError> {
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
pub(crate) fn encode_data(dst: &mut BytesMut, protocol: HubProtocol, bytes: &[u8]) -> bool {
    let opcode = match protocol {
        HubProtocol::Json if std::str::from_utf8(bytes).is_err() => return false,
        HubProtocol::Json => OpCode::Text,
        HubProtocol::MessagePack => OpCode::Binary,
    };
    Parser::write_message(dst, bytes, opcode, true, false);
    true
}

/// Appends the Pong answering a Ping with `payload` (RFC 6455 5.5.3).
pub(crate) fn encode_pong(dst: &mut BytesMut, payload: &[u8]) {
    Parser::write_message(dst, payload, OpCode::Pong, true, false);
}

/// Appends a close frame with `code`.
pub(crate) fn encode_close(dst: &mut BytesMut, code: CloseCode) {
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

    /// The messages of `body`, which arrives in chunks of 3 bytes (frames span chunks), up
    /// to the first error.
    fn read(body: &[u8], max_bytes: usize) -> (Vec<Received>, Option<ReadError>) {
        let mut reader = FrameReader::new(max_bytes);
        let mut read = Vec::new();
        for chunk in body.chunks(3) {
            reader.push(chunk);
            loop {
                match reader.decode() {
                    Ok(Some(message)) => read.push(message),
                    Ok(None) => break,
                    Err(err) => return (read, Some(err)),
                }
            }
        }
        (read, None)
    }

    #[test]
    fn messages_are_read_whole_and_continuations_joined() {
        let body = client_frames(vec![
            Message::Text("one".into()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Continuation(Item::FirstText(Bytes::from_static(b"tw"))),
            Message::Continuation(Item::Continue(Bytes::from_static(b"o "))),
            Message::Continuation(Item::Last(Bytes::from_static(b"parts"))),
            Message::Binary(Bytes::from_static(&[1, 2])),
            Message::Close(None),
        ]);
        let (read, err) = read(&body, 1024);
        assert!(err.is_none(), "{err:?}");
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

    #[test]
    fn a_message_over_the_limit_in_one_frame_or_several_is_too_large() {
        let body = client_frames(vec![Message::Text("x".repeat(11).into())]);
        let (_, one) = read(&body, 10);
        assert!(matches!(one, Some(ReadError::TooLarge)), "{one:?}");

        let body = client_frames(vec![
            Message::Continuation(Item::FirstBinary(Bytes::from(vec![0; 6]))),
            Message::Continuation(Item::Last(Bytes::from(vec![0; 6]))),
        ]);
        let (_, several) = read(&body, 10);
        assert!(matches!(several, Some(ReadError::TooLarge)), "{several:?}");
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        let mut body = BytesMut::new();
        // The codec's Text takes a ByteString; write the frame by hand to get bad bytes in.
        Parser::write_message(&mut body, [0xff, 0xfe], OpCode::Text, true, true);
        let (_, err) = read(&body, 10);
        assert!(matches!(err, Some(ReadError::InvalidText)), "{err:?}");
    }

    #[test]
    fn only_a_partial_frame_is_kept_and_nothing_once_all_is_decoded() {
        let body = client_frames(vec![Message::Text("whole".into())]);
        let mut reader = FrameReader::new(1024);
        reader.push(&body[..body.len() - 1]);
        assert!(matches!(reader.decode(), Ok(None)));
        assert_eq!(reader.buf.len(), body.len() - 1);
        reader.push(&body[body.len() - 1..]);
        assert!(matches!(reader.decode(), Ok(Some(Received::Text(_)))));
        assert!(matches!(reader.decode(), Ok(None)));
        assert_eq!(reader.buf.capacity(), 0, "the buffer is released");
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
