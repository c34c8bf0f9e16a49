//! The handshake that opens every hub connection (HubProtocol.md, overview).
//!
//! The client's first record is always JSON text terminated by `0x1E`, even for
//! MessagePack: `{"protocol":"messagepack","version":2}`. The `@microsoft/signalr`
//! 10.x client sends version 2 only when negotiation enabled stateful reconnect
//! on a WebSocket, and version 1 otherwise, for both protocols; so both versions
//! must be accepted. The server answers `{}` or `{"error":"..."}`,
//! also terminated by `0x1E`, and after an error closes the connection.
//!
//! The rejection texts are ASP.NET Core's, from `HubConnectionContext.HandshakeAsync`
//! (`src/SignalR/server/Core/src/HubConnectionContext.cs`), so clients and their
//! users see the same messages as with a .NET server.

use serde::Deserialize;
use std::borrow::Cow;

use super::json::RECORD_SEPARATOR;
use super::{HubProtocol, TransferFormat};

/// Response text when the handshake does not arrive in time, or does not fit
/// the maximum message size (ASP.NET Core uses one text for both).
pub const HANDSHAKE_CANCELED: &str = "Handshake was canceled.";

/// Response text for a handshake request that cannot be parsed.
pub const HANDSHAKE_UNEXPECTED_ERROR: &str =
    "An unexpected error occurred during connection handshake.";

/// The successful handshake response.
pub const SUCCESS_RESPONSE: &[u8] = b"{}\x1e";

/// What the client negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub protocol: HubProtocol,
    /// The version the client asked for; 2 or more allows stateful reconnect.
    pub version: i32,
    /// Bytes that followed the handshake in the same frame: the first hub
    /// messages, to be fed to the protocol's decoder.
    pub remaining: Vec<u8>,
}

/// Why the handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not JSON, not an object, or without `protocol`/`version`; the text says which.
    #[error("malformed handshake request: {0}")]
    Malformed(String),

    /// Unknown to Signet, or disabled by configuration; holds the name as sent.
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),

    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion { protocol: String, version: i32 },

    /// A binary protocol over a text-only transport (Server-Sent Events).
    #[error("Cannot use the '{protocol}' protocol on the current transport. The transport does not support '{format}' transfer format.")]
    TransferFormatUnsupported {
        protocol: HubProtocol,
        format: TransferFormat,
    },

    /// No record separator within the maximum message size.
    #[error("handshake request exceeds {limit} bytes")]
    TooLarge { limit: usize },
}

impl HandshakeError {
    /// The `error` text of the handshake response, worded as ASP.NET Core words it.
    ///
    /// `detailed` mirrors `HubOptions.EnableDetailedErrors`: it appends the parse
    /// problem to the generic text for a malformed request and changes nothing else.
    pub fn response_text(&self, detailed: bool) -> String {
        match self {
            Self::Malformed(detail) if detailed => {
                format!("{HANDSHAKE_UNEXPECTED_ERROR} InvalidDataException: {detail}")
            }
            Self::Malformed(_) => HANDSHAKE_UNEXPECTED_ERROR.to_owned(),
            Self::TooLarge { .. } => HANDSHAKE_CANCELED.to_owned(),
            other => other.to_string(),
        }
    }
}

/// Appends the handshake response: `{}` on success, `{"error":"..."}` otherwise,
/// then the record separator.
pub fn encode_response(error: Option<&str>, out: &mut Vec<u8>) {
    match error {
        None => out.extend_from_slice(SUCCESS_RESPONSE),
        Some(text) => {
            out.extend_from_slice(b"{\"error\":");
            write_json_string(out, text);
            out.push(b'}');
            out.push(RECORD_SEPARATOR);
        }
    }
}

/// Writes `text` as a JSON string; by hand so the response cannot fail to encode.
fn write_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x00..=0x1f => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0x0f)],
            ]),
            // UTF-8 multi-byte sequences pass through: `text` is valid UTF-8.
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// Collects the handshake request from the first frames of a connection and
/// checks it against what this server and transport allow.
#[derive(Debug)]
pub struct HandshakeDecoder {
    record: RecordBuffer,
    json_enabled: bool,
    msgpack_enabled: bool,
    binary_transport: bool,
}

impl HandshakeDecoder {
    /// Accepts both protocols over a transport that carries binary frames;
    /// `max_message_size` bounds the request, separator excluded.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            record: RecordBuffer::new(max_message_size),
            json_enabled: true,
            msgpack_enabled: true,
            binary_transport: true,
        }
    }

    /// Accepts only `protocols`; the others are answered as unsupported.
    pub fn with_protocols(mut self, protocols: &[HubProtocol]) -> Self {
        self.json_enabled = protocols.contains(&HubProtocol::Json);
        self.msgpack_enabled = protocols.contains(&HubProtocol::MessagePack);
        self
    }

    /// For transports that carry only text, such as Server-Sent Events.
    pub fn text_only_transport(mut self) -> Self {
        self.binary_transport = false;
        self
    }

    /// Adds one received frame (text or binary: the request is JSON either way).
    ///
    /// `Ok(None)` means the request is not complete yet. Once it returns
    /// `Ok(Some(_))` or an error the handshake is over and the decoder is spent.
    pub fn feed(&mut self, frame: &[u8]) -> Result<Option<Handshake>, HandshakeError> {
        let Some((record, remaining)) = self.record.push(frame)? else {
            return Ok(None);
        };
        let request = parse_request(&record)?;
        let protocol = self.resolve(request.protocol, request.version)?;
        Ok(Some(Handshake {
            protocol,
            version: request.version,
            remaining: remaining.to_vec(),
        }))
    }

    /// The checks of `HandshakeAsync`, in its order: protocol, version, transfer format.
    fn resolve(&self, name: String, version: i32) -> Result<HubProtocol, HandshakeError> {
        let protocol = match HubProtocol::from_name(&name) {
            Some(protocol) if self.enabled(protocol) => protocol,
            _ => return Err(HandshakeError::UnsupportedProtocol(name)),
        };
        if !protocol.is_version_supported(version) {
            return Err(HandshakeError::UnsupportedVersion {
                protocol: name,
                version,
            });
        }
        let format = protocol.transfer_format();
        if format == TransferFormat::Binary && !self.binary_transport {
            return Err(HandshakeError::TransferFormatUnsupported { protocol, format });
        }
        Ok(protocol)
    }

    fn enabled(&self, protocol: HubProtocol) -> bool {
        match protocol {
            HubProtocol::Json => self.json_enabled,
            HubProtocol::MessagePack => self.msgpack_enabled,
        }
    }
}

struct Request {
    protocol: String,
    version: i32,
}

#[derive(Deserialize)]
struct RequestWire {
    protocol: Option<String>,
    version: Option<i32>,
}

/// Parses the request record, separator excluded. Other properties are ignored,
/// as ASP.NET Core does.
fn parse_request(record: &[u8]) -> Result<Request, HandshakeError> {
    // serde would also accept a JSON array positionally for a struct.
    if record.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(HandshakeError::Malformed(
            "The handshake request is not a JSON object.".into(),
        ));
    }
    let wire: RequestWire = serde_json::from_slice(record)
        .map_err(|error| HandshakeError::Malformed(format!("Error reading JSON: {error}.")))?;
    let protocol = wire
        .protocol
        .ok_or_else(|| HandshakeError::Malformed("Missing required property 'protocol'.".into()))?;
    let version = wire
        .version
        .ok_or_else(|| HandshakeError::Malformed("Missing required property 'version'.".into()))?;
    Ok(Request { protocol, version })
}

/// Client side: appends the handshake request `{"protocol":"<name>","version":<n>}` and its
/// record separator to `out`. It is JSON text whatever the protocol.
pub fn encode_request(protocol: HubProtocol, version: i32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"protocol\":");
    write_json_string(out, protocol.name());
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(version.to_string().as_bytes());
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
}

/// Client side: what the server answered to the handshake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The server's `error` text; `None` when the handshake succeeded.
    pub error: Option<String>,
    /// Bytes that followed the response in the same frame: the first hub messages.
    pub remaining: Vec<u8>,
}

/// Client side: collects the server's handshake response (`{}` or `{"error":"..."}`, JSON text
/// even for MessagePack) from the first frames of a connection.
#[derive(Debug)]
pub struct HandshakeResponseDecoder {
    record: RecordBuffer,
}

impl HandshakeResponseDecoder {
    /// `max_message_size` bounds the response, separator excluded.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            record: RecordBuffer::new(max_message_size),
        }
    }

    /// Adds one received frame. `Ok(None)` means the response is not complete yet; after
    /// `Ok(Some(_))` or an error the decoder is spent.
    pub fn feed(&mut self, frame: &[u8]) -> Result<Option<HandshakeResponse>, HandshakeError> {
        let Some((record, remaining)) = self.record.push(frame)? else {
            return Ok(None);
        };
        let error = parse_response(&record)?;
        Ok(Some(HandshakeResponse {
            error,
            remaining: remaining.to_vec(),
        }))
    }
}

/// A complete handshake record and the bytes that followed it in its frame.
type Record<'f> = (Cow<'f, [u8]>, &'f [u8]);

/// Collects the one record a handshake side sends, terminated by `0x1E`, from as many frames
/// as it takes; bounded by a maximum size, separator excluded. Both handshake decoders use it.
#[derive(Debug)]
struct RecordBuffer {
    buffer: Vec<u8>,
    max: usize,
}

impl RecordBuffer {
    fn new(max: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max,
        }
    }

    /// `Ok(None)` until the separator arrives; then the record (separator excluded, borrowed
    /// from the frame when it came whole) and the bytes after it.
    fn push<'f>(&mut self, frame: &'f [u8]) -> Result<Option<Record<'f>>, HandshakeError> {
        let too_large = HandshakeError::TooLarge { limit: self.max };
        let Some(separator) = frame.iter().position(|&b| b == RECORD_SEPARATOR) else {
            if self.buffer.len().saturating_add(frame.len()) > self.max {
                self.buffer = Vec::new();
                return Err(too_large);
            }
            self.buffer.extend_from_slice(frame);
            return Ok(None);
        };
        if self.buffer.len().saturating_add(separator) > self.max {
            self.buffer = Vec::new();
            return Err(too_large);
        }
        let buffered = std::mem::take(&mut self.buffer);
        let record = if buffered.is_empty() {
            Cow::Borrowed(&frame[..separator])
        } else {
            let mut record = buffered;
            record.extend_from_slice(&frame[..separator]);
            Cow::Owned(record)
        };
        Ok(Some((record, &frame[separator + 1..])))
    }
}

#[derive(Deserialize)]
struct ResponseWire {
    error: Option<String>,
}

/// Parses the response record, separator excluded: the `error` text, if any. Other
/// properties are ignored, as the official clients do.
fn parse_response(record: &[u8]) -> Result<Option<String>, HandshakeError> {
    if record.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(HandshakeError::Malformed(
            "The handshake response is not a JSON object.".into(),
        ));
    }
    let wire: ResponseWire = serde_json::from_slice(record)
        .map_err(|error| HandshakeError::Malformed(format!("Error reading JSON: {error}.")))?;
    Ok(wire.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HubMessage;

    const LIMIT: usize = 1024;

    fn handshake(frames: &[&[u8]]) -> Result<Option<Handshake>, HandshakeError> {
        let mut decoder = HandshakeDecoder::new(LIMIT);
        let mut last = Ok(None);
        for frame in frames {
            last = decoder.feed(frame);
            if !matches!(last, Ok(None)) {
                break;
            }
        }
        last
    }

    fn refusal(request: &str) -> String {
        match handshake(&[request.as_bytes()]) {
            Err(error) => error.response_text(false),
            Ok(outcome) => panic!("accepted {request:?}: {outcome:?}"),
        }
    }

    #[test]
    fn accepts_what_the_javascript_client_sends() {
        for (request, protocol, version) in [
            (
                "{\"protocol\":\"json\",\"version\":1}\u{1e}",
                HubProtocol::Json,
                1,
            ),
            (
                "{\"protocol\":\"json\",\"version\":2}\u{1e}",
                HubProtocol::Json,
                2,
            ),
            (
                "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}",
                HubProtocol::MessagePack,
                1,
            ),
            (
                "{\"protocol\":\"messagepack\",\"version\":2}\u{1e}",
                HubProtocol::MessagePack,
                2,
            ),
        ] {
            assert_eq!(
                handshake(&[request.as_bytes()]),
                Ok(Some(Handshake {
                    protocol,
                    version,
                    remaining: Vec::new()
                }))
            );
        }
    }

    #[test]
    fn split_across_frames_anywhere() {
        let request = b"{\"protocol\":\"json\",\"version\":2}\x1e";
        for split in 0..request.len() {
            let (first, second) = request.split_at(split);
            let outcome = handshake(&[first, second]);
            assert!(
                matches!(
                    outcome,
                    Ok(Some(Handshake {
                        protocol: HubProtocol::Json,
                        ..
                    }))
                ),
                "split at {split}: {outcome:?}"
            );
        }
        let bytes: Vec<&[u8]> = request.chunks(1).collect();
        assert!(matches!(handshake(&bytes), Ok(Some(_))));
    }

    #[test]
    fn returns_the_messages_that_followed() {
        let mut frame = b"{\"protocol\":\"messagepack\",\"version\":2}\x1e".to_vec();
        frame.extend_from_slice(HubProtocol::MessagePack.ping_frame());
        let outcome = handshake(&[&frame[..5], &frame[5..]]);
        let Ok(Some(done)) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(done.remaining, [0x02, 0x91, 0x06]);
        let mut decoder = done.protocol.decoder(LIMIT);
        decoder.feed(&done.remaining).unwrap();
        assert_eq!(decoder.next_message(), Some(Ok(HubMessage::Ping)));
    }

    #[test]
    fn aspnet_refusal_texts() {
        assert_eq!(
            refusal("{\"protocol\":\"xyz\",\"version\":1}\u{1e}"),
            "The protocol 'xyz' is not supported."
        );
        assert_eq!(
            refusal("{\"protocol\":\"json\",\"version\":3}\u{1e}"),
            "The server does not support version 3 of the 'json' protocol."
        );
        // The name is echoed as the client spelled it, as ASP.NET Core does.
        assert_eq!(
            refusal("{\"protocol\":\"MessagePack\",\"version\":7}\u{1e}"),
            "The server does not support version 7 of the 'MessagePack' protocol."
        );
        for malformed in [
            "not json\u{1e}",
            "\u{1e}",
            "[\"json\",1]\u{1e}",
            "{\"version\":1}\u{1e}",
            "{\"protocol\":\"json\"}\u{1e}",
            "{\"protocol\":\"json\",\"version\":\"1\"}\u{1e}",
            "{\"protocol\":\"json\",\"version\":1.5}\u{1e}",
            "{\"protocol\":null,\"version\":1}\u{1e}",
        ] {
            assert_eq!(
                refusal(malformed),
                HANDSHAKE_UNEXPECTED_ERROR,
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn detailed_errors_explain_malformed_requests() {
        let error = handshake(&[b"{\"version\":1}\x1e"]).unwrap_err();
        assert_eq!(
            error.response_text(true),
            "An unexpected error occurred during connection handshake. InvalidDataException: Missing required property 'protocol'."
        );
    }

    #[test]
    fn unknown_properties_are_ignored() {
        assert!(matches!(
            handshake(&[b"{\"version\":1,\"extra\":[{}],\"protocol\":\"Json\"}\x1e"]),
            Ok(Some(Handshake {
                protocol: HubProtocol::Json,
                version: 1,
                ..
            }))
        ));
    }

    #[test]
    fn disabled_protocols_and_text_only_transports() {
        let request = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e";
        let mut json_only = HandshakeDecoder::new(LIMIT).with_protocols(&[HubProtocol::Json]);
        assert_eq!(
            json_only.feed(request).map_err(|e| e.response_text(false)),
            Err("The protocol 'messagepack' is not supported.".to_owned())
        );
        let mut server_sent_events = HandshakeDecoder::new(LIMIT).text_only_transport();
        assert_eq!(
            server_sent_events.feed(request).map_err(|e| e.response_text(false)),
            Err("Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format.".to_owned())
        );
        let mut json_over_sse = HandshakeDecoder::new(LIMIT).text_only_transport();
        assert!(matches!(
            json_over_sse.feed(b"{\"protocol\":\"json\",\"version\":1}\x1e"),
            Ok(Some(_))
        ));
    }

    #[test]
    fn oversized_requests_are_canceled() {
        let mut decoder = HandshakeDecoder::new(16);
        assert_eq!(decoder.feed(b"{\"protocol\":"), Ok(None));
        let error = decoder.feed(b"\"json\",").unwrap_err();
        assert_eq!(error, HandshakeError::TooLarge { limit: 16 });
        assert_eq!(error.response_text(false), HANDSHAKE_CANCELED);

        let mut decoder = HandshakeDecoder::new(16);
        assert_eq!(
            decoder.feed(b"{\"protocol\":\"json\",\"version\":1}\x1e"),
            Err(HandshakeError::TooLarge { limit: 16 })
        );
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        encode_response(None, &mut out);
        assert_eq!(out, b"{}\x1e");
        out.clear();
        encode_response(Some("The protocol 'a\"b\\c\n' is not supported."), &mut out);
        assert_eq!(
            out,
            b"{\"error\":\"The protocol 'a\\\"b\\\\c\\u000a' is not supported.\"}\x1e".to_vec()
        );
        let parsed: serde_json::Value = serde_json::from_slice(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            parsed["error"],
            "The protocol 'a\"b\\c\n' is not supported."
        );
    }

    #[test]
    fn garbage_never_panics() {
        let seed = b"{\"protocol\":\"messagepack\",\"version\":2}\x1e\x02\x91\x06".to_vec();
        let mut rng = crate::protocol::test_support::Lcg::new(7);
        for _ in 0..3000 {
            let mut input = seed.clone();
            rng.mutate(&mut input);
            let mut decoder = HandshakeDecoder::new(64);
            for chunk in input.chunks(1 + rng.below(8)) {
                if !matches!(decoder.feed(chunk), Ok(None)) {
                    break;
                }
            }
        }
    }
    #[test]
    fn client_request_is_what_the_server_accepts() {
        for protocol in HubProtocol::ALL {
            for version in [1, 2] {
                let mut request = Vec::new();
                encode_request(protocol, version, &mut request);
                assert!(matches!(
                    handshake(&[&request]),
                    Ok(Some(Handshake { protocol: p, version: v, .. })) if p == protocol && v == version
                ));
            }
        }
        let mut request = Vec::new();
        encode_request(HubProtocol::Json, 1, &mut request);
        assert_eq!(request, b"{\"protocol\":\"json\",\"version\":1}\x1e");
    }

    #[test]
    fn client_reads_the_responses_the_server_writes() {
        let mut ok = Vec::new();
        encode_response(None, &mut ok);
        ok.extend_from_slice(HubProtocol::Json.ping_frame());
        for split in 0..ok.len() {
            let mut decoder = HandshakeResponseDecoder::new(LIMIT);
            let first = decoder.feed(&ok[..split]).unwrap();
            let response = match first {
                Some(response) => response,
                None => decoder.feed(&ok[split..]).unwrap().unwrap(),
            };
            assert_eq!(response.error, None, "split at {split}");
            if split <= 2 {
                assert_eq!(response.remaining, HubProtocol::Json.ping_frame());
            }
        }

        let mut refused = Vec::new();
        encode_response(Some("The protocol 'x' is not \"supported\"."), &mut refused);
        let response = HandshakeResponseDecoder::new(LIMIT)
            .feed(&refused)
            .unwrap()
            .unwrap();
        assert_eq!(
            response.error.as_deref(),
            Some("The protocol 'x' is not \"supported\".")
        );
        assert!(response.remaining.is_empty());
    }

    #[test]
    fn client_refuses_bad_or_oversized_responses() {
        for bad in [&b"[]\x1e"[..], b"nope\x1e", b"{\"error\":1}\x1e"] {
            assert!(matches!(
                HandshakeResponseDecoder::new(LIMIT).feed(bad),
                Err(HandshakeError::Malformed(_))
            ));
        }
        let mut decoder = HandshakeResponseDecoder::new(4);
        assert_eq!(decoder.feed(b"{ "), Ok(None));
        assert_eq!(
            decoder.feed(b"   "),
            Err(HandshakeError::TooLarge { limit: 4 })
        );
    }
}
