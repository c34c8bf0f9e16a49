//! The SignalR hub protocols: the handshake, the hub message model and its two
//! wire encodings, JSON and MessagePack, as the official clients speak them.
//!
//! This layer is pure: bytes in, messages out and back, with no I/O, no async and
//! no clock, so transports and the hub can share it and tests can drive it with
//! plain byte slices. Every decoder bounds what it buffers by a caller-given
//! maximum message size and never panics on client input.
//!
//! A connection goes through it like this:
//! 1. [`HandshakeDecoder`] reads the handshake request (always JSON text) from
//!    the first frames and returns the negotiated [`HubProtocol`] plus any bytes
//!    that followed it; the server answers with [`handshake::encode_response`].
//! 2. [`HubProtocol::decoder`] gives the [`HubMessageDecoder`] for the rest of
//!    the connection: feed it each frame, then take messages out.
//! 3. Outgoing messages are written with [`HubProtocol::encode`] into a reused
//!    buffer, or encoded once per protocol for a broadcast with
//!    [`SerializedHubMessage`].
//!
//! Clients (the `signet-device` binary, test clients) use the same codecs from the other
//! side: [`handshake::encode_request`] and [`HandshakeResponseDecoder`] for the handshake, then
//! the same decoders and encoders for hub messages.
//!
//! Reference: dotnet/aspnetcore `src/SignalR/docs/specs/HubProtocol.md`.

mod buffer;
mod error;
pub mod handshake;
pub mod json;
mod message;
pub mod msgpack;
pub mod typed;

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;

pub use self::error::ProtocolError;
pub use self::handshake::{
    Handshake, HandshakeDecoder, HandshakeError, HandshakeResponse, HandshakeResponseDecoder,
};
pub use self::json::JsonDecoder;
pub use self::message::{CompletionResult, Headers, HubMessage, MessageType};
pub use self::msgpack::MessagePackDecoder;

/// How a protocol's frames travel: WebSocket text or binary frames, and whether
/// a text-only transport (Server-Sent Events) can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferFormat {
    Text,
    Binary,
}

impl fmt::Display for TransferFormat {
    /// The names ASP.NET Core prints in handshake errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "Text",
            Self::Binary => "Binary",
        })
    }
}

/// A hub protocol a client can negotiate in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubProtocol {
    Json,
    MessagePack,
}

impl HubProtocol {
    /// Every protocol Signet implements.
    pub const ALL: [HubProtocol; 2] = [HubProtocol::Json, HubProtocol::MessagePack];

    /// Highest protocol version spoken; version 2 added Ack and Sequence for
    /// stateful reconnect, and both protocols share the numbering.
    pub const VERSION: i32 = 2;

    /// The name used in the handshake request.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MessagePack => "messagepack",
        }
    }

    /// Resolves a handshake name; like ASP.NET Core's resolver the comparison
    /// ignores ASCII case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|protocol| protocol.name().eq_ignore_ascii_case(name))
    }

    pub fn transfer_format(self) -> TransferFormat {
        match self {
            Self::Json => TransferFormat::Text,
            Self::MessagePack => TransferFormat::Binary,
        }
    }

    /// ASP.NET Core accepts any version up to its own (`version <= Version`), so
    /// clients that fall back to 1 (no stateful reconnect) still connect.
    pub fn is_version_supported(self, version: i32) -> bool {
        version <= Self::VERSION
    }

    /// A decoder for the frames a client sends after the handshake.
    pub fn decoder(self, max_message_size: usize) -> HubMessageDecoder {
        match self {
            Self::Json => HubMessageDecoder::Json(JsonDecoder::new(max_message_size)),
            Self::MessagePack => {
                HubMessageDecoder::MessagePack(MessagePackDecoder::new(max_message_size))
            }
        }
    }

    /// Appends `message`, framed (record separator or length prefix), to `out`.
    pub fn encode(self, message: &HubMessage, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match self {
            Self::Json => json::encode(message, out),
            Self::MessagePack => msgpack::encode(message, out),
        }
    }

    /// `message` framed into shared bytes, for handing to a transport queue.
    pub fn encode_to_bytes(self, message: &HubMessage) -> Result<Bytes, ProtocolError> {
        let mut out = Vec::new();
        self.encode(message, &mut out)?;
        Ok(Bytes::from(out))
    }

    /// The type of the first message in an encoded `frame` (what [`HubProtocol::encode`]
    /// wrote), without decoding it: stateful reconnect numbers only trackable messages.
    pub fn message_type_of(self, frame: &[u8]) -> Option<MessageType> {
        match self {
            Self::Json => json::peek_type(frame),
            Self::MessagePack => msgpack::peek_type(frame),
        }
    }

    /// The framed Ping, precomputed because keep-alives are sent on every idle connection.
    pub fn ping_frame(self) -> &'static [u8] {
        match self {
            Self::Json => b"{\"type\":6}\x1e",
            Self::MessagePack => &[0x02, 0x91, 0x06],
        }
    }
}

impl fmt::Display for HubProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The decoder of whichever protocol a connection negotiated.
#[derive(Debug)]
pub enum HubMessageDecoder {
    Json(JsonDecoder),
    MessagePack(MessagePackDecoder),
}

impl HubMessageDecoder {
    /// Adds one received frame; see [`JsonDecoder::feed`] and [`MessagePackDecoder::feed`].
    pub fn feed(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        match self {
            Self::Json(decoder) => decoder.feed(frame),
            Self::MessagePack(decoder) => decoder.feed(frame),
        }
    }

    /// The next complete message, `None` when more frames are needed.
    pub fn next_message(&mut self) -> Option<Result<HubMessage, ProtocolError>> {
        match self {
            Self::Json(decoder) => decoder.next_message(),
            Self::MessagePack(decoder) => decoder.next_message(),
        }
    }
}

/// A message sent to many connections, encoded at most once per protocol and
/// shared as [`Bytes`] by every recipient's queue.
#[derive(Debug)]
pub struct SerializedHubMessage {
    /// `None` for a message that arrived already encoded ([`SerializedHubMessage::encoded`]).
    message: Option<HubMessage>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl SerializedHubMessage {
    pub fn new(message: HubMessage) -> Self {
        Self {
            message: Some(message),
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// A message another process encoded for both protocols (framed, as [`Self::bytes`]
    /// gives them), sent on as it came without decoding it.
    pub fn encoded(json: Bytes, msgpack: Bytes) -> Self {
        Self {
            message: None,
            json: OnceLock::from(json),
            msgpack: OnceLock::from(msgpack),
        }
    }

    /// The message, unless it arrived already encoded.
    pub fn message(&self) -> Option<&HubMessage> {
        self.message.as_ref()
    }

    /// The framed bytes for `protocol`, encoded on first use.
    pub fn bytes(&self, protocol: HubProtocol) -> Result<Bytes, ProtocolError> {
        let cache = match protocol {
            HubProtocol::Json => &self.json,
            HubProtocol::MessagePack => &self.msgpack,
        };
        if let Some(bytes) = cache.get() {
            return Ok(bytes.clone());
        }
        let Some(message) = &self.message else {
            // `encoded` fills both caches, so this is unreachable; say so rather than panic.
            return Err(ProtocolError::Encode(
                "an encoded message lacks this protocol's bytes".into(),
            ));
        };
        // Two threads may both encode on a race; the loser's copy is dropped,
        // which is cheaper than holding a lock while encoding.
        let encoded = protocol.encode_to_bytes(message)?;
        Ok(cache.get_or_init(|| encoded).clone())
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    /// A small deterministic generator for the garbage-input tests, so a failure
    /// reproduces without a fuzzing dependency.
    pub(crate) struct Lcg(u64);

    impl Lcg {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed)
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        pub(crate) fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound.max(1) as u64) as usize
        }

        /// Flips, overwrites with edge bytes, inserts, duplicates and truncates.
        pub(crate) fn mutate(&mut self, input: &mut Vec<u8>) {
            const EDGE: [u8; 12] = [
                0x00, 0x1e, 0x7f, 0x80, 0xc0, 0xc1, 0xcf, 0xd9, 0xdd, 0xdf, 0xff, b'{',
            ];
            for _ in 0..1 + self.below(4) {
                let position = self.below(input.len() + 1);
                match self.below(6) {
                    0 if position < input.len() => input[position] ^= 1 << self.below(8),
                    1 if position < input.len() => input[position] = EDGE[self.below(EDGE.len())],
                    2 => input.insert(position, EDGE[self.below(EDGE.len())]),
                    3 => input.truncate(position),
                    4 => {
                        let copy = input[position..].to_vec();
                        input.extend_from_slice(&copy);
                    }
                    _ => {
                        let byte = self.next() as u8;
                        input.insert(position, byte);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_resolve_ignoring_case() {
        assert_eq!(HubProtocol::from_name("json"), Some(HubProtocol::Json));
        assert_eq!(HubProtocol::from_name("JSON"), Some(HubProtocol::Json));
        assert_eq!(
            HubProtocol::from_name("MessagePack"),
            Some(HubProtocol::MessagePack)
        );
        assert_eq!(HubProtocol::from_name("xml"), None);
        assert_eq!(HubProtocol::from_name(""), None);
    }

    #[test]
    fn ping_frames_are_what_the_encoders_write() {
        for protocol in HubProtocol::ALL {
            let mut out = Vec::new();
            protocol.encode(&HubMessage::Ping, &mut out).unwrap();
            assert_eq!(out, protocol.ping_frame());
        }
    }

    #[test]
    fn versions() {
        assert!(HubProtocol::Json.is_version_supported(1));
        assert!(HubProtocol::Json.is_version_supported(2));
        assert!(!HubProtocol::MessagePack.is_version_supported(3));
    }

    #[test]
    fn decoders_follow_the_protocol() {
        for protocol in HubProtocol::ALL {
            let message = HubMessage::invocation("Echo", vec![json!({"k": [1, "v"]})]);
            let mut decoder = protocol.decoder(1024);
            let bytes = protocol.encode_to_bytes(&message).unwrap();
            decoder.feed(&bytes).unwrap();
            assert_eq!(decoder.next_message(), Some(Ok(message)));
            assert_eq!(decoder.next_message(), None);
        }
    }

    #[test]
    fn message_types_are_read_from_encoded_frames() {
        let messages = [
            HubMessage::invocation("Tick", vec![json!({"type": 6})]),
            HubMessage::stream_item("7", json!("x")),
            HubMessage::completion("7", CompletionResult::Void),
            HubMessage::Ping,
            HubMessage::close(Some("bye".into()), true),
            HubMessage::Ack { sequence_id: 3 },
            HubMessage::Sequence { sequence_id: 300 },
        ];
        for protocol in HubProtocol::ALL {
            for message in &messages {
                let mut frame = protocol.encode_to_bytes(message).unwrap().to_vec();
                // A second message after the first does not change the answer.
                protocol.encode(&HubMessage::Ping, &mut frame).unwrap();
                assert_eq!(
                    protocol.message_type_of(&frame),
                    Some(message.message_type()),
                    "{protocol} {message:?}"
                );
            }
            assert_eq!(protocol.message_type_of(handshake::SUCCESS_RESPONSE), None);
            assert_eq!(protocol.message_type_of(b""), None);
        }
        // Records written by another encoder, `type` not first.
        assert_eq!(
            HubProtocol::Json.message_type_of(b"{\"invocationId\":\"1\",\"type\":3}\x1e"),
            Some(MessageType::Completion)
        );
        assert_eq!(
            HubProtocol::Json.message_type_of(b"{\"error\":\"no\"}\x1e"),
            None
        );
        // A frame cut short is not a whole message.
        let cut = HubProtocol::MessagePack
            .encode_to_bytes(&HubMessage::invocation("T", vec![]))
            .unwrap();
        assert_eq!(
            HubProtocol::MessagePack.message_type_of(&cut[..cut.len() - 1]),
            None
        );
    }

    #[test]
    fn serialized_message_encodes_once_per_protocol() {
        let shared = SerializedHubMessage::new(HubMessage::invocation("Tick", vec![json!(1)]));
        let first = shared.bytes(HubProtocol::Json).unwrap();
        let second = shared.bytes(HubProtocol::Json).unwrap();
        // Same allocation: the second call reused the cached encoding.
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert_eq!(
            &first[..],
            b"{\"type\":1,\"target\":\"Tick\",\"arguments\":[1]}\x1e"
        );
        let binary = shared.bytes(HubProtocol::MessagePack).unwrap();
        assert_eq!(binary.first(), Some(&0x0c));
    }

    /// What a MessagePack client sent as bin and timestamp reaches MessagePack receivers as bin
    /// and timestamp, JSON receivers as base64 and ISO 8601, each encoded once.
    #[test]
    fn typed_values_keep_their_type_per_protocol() {
        // [1, {}, nil, "Data", [bin [1, 2, 3], timestamp 2024-01-02T03:04:05.678Z], []]
        let sent = [
            0x96, 0x01, 0x80, 0xc0, 0xa4, b'D', b'a', b't', b'a', 0x92, 0xc4, 0x03, 1, 2, 3, 0xd7,
            0xff, 0xa1, 0xa5, 0xd6, 0x00, 0x65, 0x93, 0x7d, 0x25, 0x90,
        ];
        let mut frame = vec![sent.len() as u8];
        frame.extend_from_slice(&sent);
        let mut decoder = HubProtocol::MessagePack.decoder(1024);
        decoder.feed(&frame).unwrap();
        let message = decoder.next_message().unwrap().unwrap();
        let shared = SerializedHubMessage::new(message);
        let binary = shared.bytes(HubProtocol::MessagePack).unwrap();
        assert_eq!(&binary[..], &frame[..]);
        let json = shared.bytes(HubProtocol::Json).unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            "{\"type\":1,\"target\":\"Data\",\"arguments\":[\"AQID\",\"2024-01-02T03:04:05.678Z\"]}\u{1e}"
        );
        let again = shared.bytes(HubProtocol::Json).unwrap();
        assert_eq!(json.as_ptr(), again.as_ptr());
    }
}
