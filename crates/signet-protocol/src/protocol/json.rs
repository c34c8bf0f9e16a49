//! The JSON hub protocol: one JSON object per message, each terminated by the
//! ASCII record separator `0x1E` (HubProtocol.md, "JSON Encoding").
//!
//! Property names follow the spec: `type`, `headers`, `invocationId`, `target`,
//! `arguments`, `streamIds`, `item`, `result`, `error`, `allowReconnect`,
//! `sequenceId`. Unknown properties are skipped, as ASP.NET Core does, so newer
//! clients can add some. An empty `invocationId` on an Invocation means
//! "non-blocking", like ASP.NET Core's `string.IsNullOrEmpty` check.

use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::buffer::InboundBuffer;
use super::error::ProtocolError;
use super::message::{CompletionResult, Headers, HubMessage, MessageType};
use super::typed::{JsonPayload, JsonPayloads};

/// Terminates every JSON record, the handshake included.
pub const RECORD_SEPARATOR: u8 = 0x1E;

/// Splits incoming text frames into records and decodes them.
///
/// Frames may carry several records, and a record may span several frames.
/// Call [`JsonDecoder::feed`] with each frame, then [`JsonDecoder::next_message`]
/// until it returns `None`.
#[derive(Debug)]
pub struct JsonDecoder {
    buffer: InboundBuffer,
    max_message_size: usize,
}

impl JsonDecoder {
    /// `max_message_size` bounds one record in bytes, separator excluded; it also
    /// bounds what is buffered while a record is still arriving.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buffer: InboundBuffer::default(),
            max_message_size,
        }
    }

    /// Adds one received frame.
    ///
    /// Fails with [`ProtocolError::MessageTooLarge`] when an unterminated record
    /// grows past the limit; the check runs before copying, so an oversized record
    /// is never buffered. After a failure the decoder stays failed.
    pub fn feed(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        self.buffer.check_usable()?;
        let incomplete_before = self.buffer.incomplete().len();
        let last_separator = frame.iter().rposition(|&b| b == RECORD_SEPARATOR);
        let incomplete_after = match last_separator {
            Some(position) => frame.len() - position - 1,
            None => incomplete_before.saturating_add(frame.len()),
        };
        if incomplete_after > self.max_message_size {
            return Err(self.buffer.fail(ProtocolError::MessageTooLarge {
                limit: self.max_message_size,
            }));
        }
        self.buffer.append(frame);
        if let Some(position) = last_separator {
            self.buffer
                .extend_complete(incomplete_before + position + 1);
        }
        Ok(())
    }

    /// The next complete message, `None` when more frames are needed.
    ///
    /// An `Err` for a single record (bad JSON, unknown type, missing property)
    /// has consumed that record, so the caller may continue; an oversized
    /// record fails the decoder for good.
    pub fn next_message(&mut self) -> Option<Result<HubMessage, ProtocolError>> {
        Some(self.next_record()?.and_then(parse_message))
    }

    /// The next complete record as it came, separator excluded, `None` when more frames are
    /// needed: for a reader that decodes only the messages it expects (the load generator),
    /// with the framing and size checks of [`JsonDecoder::next_message`].
    pub fn next_record(&mut self) -> Option<Result<&[u8], ProtocolError>> {
        let end = self
            .buffer
            .ready()
            .iter()
            .position(|&b| b == RECORD_SEPARATOR)?;
        if end > self.max_message_size {
            return Some(Err(self.buffer.fail(ProtocolError::MessageTooLarge {
                limit: self.max_message_size,
            })));
        }
        Some(Ok(self.buffer.take(end, 1)))
    }
}

/// Appends `message` as one JSON record, separator included, to `out`.
///
/// Properties are written in ASP.NET Core's order, `type` first; optional ones
/// only when they carry something (`headers` when non-empty, `streamIds` when
/// non-empty, `allowReconnect` only when true, `error` only when set).
pub fn encode(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let start = out.len();
    if let Err(error) = serde_json::to_writer(&mut *out, &WireOut(message)) {
        out.truncate(start);
        return Err(ProtocolError::Encode(error.to_string()));
    }
    out.push(RECORD_SEPARATOR);
    Ok(())
}

/// The type of the first message in `frame`, one or more encoded records, without decoding
/// the rest of it. [`encode`] writes `type` first, which is the fast path; any other record
/// is parsed for its `type`. `None` for a record without a numeric `type` (the handshake
/// response, for example).
pub fn peek_type(frame: &[u8]) -> Option<MessageType> {
    let end = frame.iter().position(|&b| b == RECORD_SEPARATOR)?;
    let record = &frame[..end];
    let number = match record.strip_prefix(b"{\"type\":") {
        Some(rest) => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?
        }
        None => {
            #[derive(Deserialize)]
            struct TypeOnly {
                #[serde(rename = "type")]
                message_type: Option<i64>,
            }
            serde_json::from_slice::<TypeOnly>(record)
                .ok()?
                .message_type?
        }
    };
    MessageType::from_wire(number)
}

/// Decodes one record, without its separator.
pub fn parse_message(record: &[u8]) -> Result<HubMessage, ProtocolError> {
    // serde would also accept a JSON array positionally for a struct; the
    // protocol only allows objects.
    if record.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ProtocolError::InvalidJson("expected a JSON object".into()));
    }
    let wire: WireIn = serde_json::from_slice(record)
        .map_err(|error| ProtocolError::InvalidJson(error.to_string()))?;
    wire.into_message()
}

/// Every property any message type may have; which ones are required depends on `type`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    /// Kept as a raw value so "missing" and "not an integer" are told apart.
    #[serde(rename = "type")]
    message_type: Option<Value>,
    headers: Option<Headers>,
    invocation_id: Option<String>,
    target: Option<String>,
    arguments: Option<Vec<Value>>,
    stream_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    item: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    error: Option<String>,
    allow_reconnect: Option<bool>,
    sequence_id: Option<u64>,
}

/// Makes a property that is present but `null` `Some(Value::Null)`: a `null`
/// result or stream item is a value, unlike an absent one.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl WireIn {
    fn into_message(self) -> Result<HubMessage, ProtocolError> {
        let number = match self.message_type {
            None => return Err(ProtocolError::MissingType),
            Some(value) => value.as_i64().ok_or(ProtocolError::InvalidType)?,
        };
        let kind =
            MessageType::from_wire(number).ok_or(ProtocolError::UnknownMessageType(number))?;
        let missing = |field| ProtocolError::MissingField {
            message: kind,
            field,
        };
        let headers = self.headers.unwrap_or_default();
        let invocation_id = self.invocation_id.filter(|id| !id.is_empty());
        Ok(match kind {
            MessageType::Invocation => HubMessage::Invocation {
                headers,
                invocation_id,
                target: non_empty(self.target).ok_or_else(|| missing("target"))?,
                arguments: self.arguments.ok_or_else(|| missing("arguments"))?,
                stream_ids: self.stream_ids.unwrap_or_default(),
            },
            MessageType::StreamInvocation => HubMessage::StreamInvocation {
                headers,
                invocation_id: invocation_id.ok_or_else(|| missing("invocationId"))?,
                target: non_empty(self.target).ok_or_else(|| missing("target"))?,
                arguments: self.arguments.ok_or_else(|| missing("arguments"))?,
                stream_ids: self.stream_ids.unwrap_or_default(),
            },
            MessageType::StreamItem => HubMessage::StreamItem {
                headers,
                invocation_id: invocation_id.ok_or_else(|| missing("invocationId"))?,
                item: self.item.ok_or_else(|| missing("item"))?,
            },
            MessageType::Completion => HubMessage::Completion {
                headers,
                invocation_id: invocation_id.ok_or_else(|| missing("invocationId"))?,
                result: match (self.error, self.result) {
                    (Some(_), Some(_)) => return Err(ProtocolError::ErrorAndResult),
                    (Some(error), None) => CompletionResult::Error(error),
                    (None, Some(value)) => CompletionResult::Result(value),
                    (None, None) => CompletionResult::Void,
                },
            },
            MessageType::CancelInvocation => HubMessage::CancelInvocation {
                headers,
                invocation_id: invocation_id.ok_or_else(|| missing("invocationId"))?,
            },
            MessageType::Ping => HubMessage::Ping,
            MessageType::Close => HubMessage::Close {
                error: self.error,
                allow_reconnect: self.allow_reconnect.unwrap_or(false),
            },
            MessageType::Ack => HubMessage::Ack {
                sequence_id: self.sequence_id.ok_or_else(|| missing("sequenceId"))?,
            },
            MessageType::Sequence => HubMessage::Sequence {
                sequence_id: self.sequence_id.ok_or_else(|| missing("sequenceId"))?,
            },
        })
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

/// Serializes a message straight from the hub model, without an intermediate `Value`.
struct WireOut<'a>(&'a HubMessage);

impl Serialize for WireOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", &self.0.message_type().wire_number())?;
        match self.0 {
            HubMessage::Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                write_headers(&mut map, headers)?;
                if let Some(id) = invocation_id {
                    map.serialize_entry("invocationId", id)?;
                }
                map.serialize_entry("target", target)?;
                map.serialize_entry("arguments", &JsonPayloads(arguments))?;
                if !stream_ids.is_empty() {
                    map.serialize_entry("streamIds", stream_ids)?;
                }
            }
            HubMessage::StreamInvocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                write_headers(&mut map, headers)?;
                map.serialize_entry("invocationId", invocation_id)?;
                map.serialize_entry("target", target)?;
                map.serialize_entry("arguments", &JsonPayloads(arguments))?;
                if !stream_ids.is_empty() {
                    map.serialize_entry("streamIds", stream_ids)?;
                }
            }
            HubMessage::StreamItem {
                headers,
                invocation_id,
                item,
            } => {
                write_headers(&mut map, headers)?;
                map.serialize_entry("invocationId", invocation_id)?;
                map.serialize_entry("item", &JsonPayload(item))?;
            }
            HubMessage::Completion {
                headers,
                invocation_id,
                result,
            } => {
                write_headers(&mut map, headers)?;
                map.serialize_entry("invocationId", invocation_id)?;
                match result {
                    CompletionResult::Void => {}
                    CompletionResult::Result(value) => {
                        map.serialize_entry("result", &JsonPayload(value))?
                    }
                    CompletionResult::Error(error) => map.serialize_entry("error", error)?,
                }
            }
            HubMessage::CancelInvocation {
                headers,
                invocation_id,
            } => {
                write_headers(&mut map, headers)?;
                map.serialize_entry("invocationId", invocation_id)?;
            }
            HubMessage::Ping => {}
            HubMessage::Close {
                error,
                allow_reconnect,
            } => {
                if let Some(error) = error {
                    map.serialize_entry("error", error)?;
                }
                if *allow_reconnect {
                    map.serialize_entry("allowReconnect", &true)?;
                }
            }
            HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
                map.serialize_entry("sequenceId", sequence_id)?;
            }
        }
        map.end()
    }
}

fn write_headers<M: SerializeMap>(map: &mut M, headers: &Headers) -> Result<(), M::Error> {
    if headers.is_empty() {
        Ok(())
    } else {
        map.serialize_entry("headers", headers)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMIT: usize = 32 * 1024;

    fn encoded(message: &HubMessage) -> String {
        let mut out = Vec::new();
        assert_eq!(encode(message, &mut out), Ok(()));
        String::from_utf8(out).unwrap_or_default()
    }

    fn decode_all(frames: &[&[u8]]) -> Vec<Result<HubMessage, ProtocolError>> {
        let mut decoder = JsonDecoder::new(LIMIT);
        let mut messages = Vec::new();
        for frame in frames {
            if let Err(error) = decoder.feed(frame) {
                messages.push(Err(error));
                break;
            }
            while let Some(message) = decoder.next_message() {
                messages.push(message);
            }
        }
        messages
    }

    fn decode_one(text: &str) -> Result<HubMessage, ProtocolError> {
        parse_message(text.as_bytes())
    }

    fn all_message_kinds() -> Vec<HubMessage> {
        let mut headers = Headers::new();
        headers.insert("x".into(), "y".into());
        vec![
            HubMessage::Invocation {
                headers: headers.clone(),
                invocation_id: Some("1".into()),
                target: "Send".into(),
                arguments: vec![json!(42), json!("text"), json!({"a": [1, 2.5, null]})],
                stream_ids: vec!["7".into()],
            },
            HubMessage::invocation("Notify", vec![]),
            HubMessage::StreamItem {
                headers: headers.clone(),
                invocation_id: "2".into(),
                item: Value::Null,
            },
            HubMessage::completion("3", CompletionResult::Void),
            HubMessage::completion("3", CompletionResult::Result(Value::Null)),
            HubMessage::completion("3", CompletionResult::Result(json!([1, "two"]))),
            HubMessage::completion("3", CompletionResult::Error("It didn't work!".into())),
            HubMessage::StreamInvocation {
                headers: Headers::new(),
                invocation_id: "4".into(),
                target: "Counter".into(),
                arguments: vec![json!(10)],
                stream_ids: vec![],
            },
            HubMessage::CancelInvocation {
                headers,
                invocation_id: "4".into(),
            },
            HubMessage::Ping,
            HubMessage::close(None, false),
            HubMessage::close(Some("bye".into()), true),
            HubMessage::Ack { sequence_id: 1394 },
            HubMessage::Sequence {
                sequence_id: u64::MAX,
            },
        ]
    }

    #[test]
    fn every_message_type_round_trips() {
        for message in all_message_kinds() {
            let mut out = Vec::new();
            assert_eq!(encode(&message, &mut out), Ok(()));
            assert_eq!(out.last(), Some(&RECORD_SEPARATOR));
            let decoded = decode_all(&[&out]);
            assert_eq!(decoded, vec![Ok(message)]);
        }
    }

    #[test]
    fn raw_records_come_out_whole_across_frames_and_within_the_limit() {
        let mut decoder = JsonDecoder::new(16);
        assert_eq!(decoder.feed(b"{\"type\":6}\x1e{\"type\":"), Ok(()));
        assert_eq!(decoder.next_record(), Some(Ok(&b"{\"type\":6}"[..])));
        assert_eq!(decoder.next_record(), None);
        assert_eq!(decoder.feed(b"7}\x1e"), Ok(()));
        assert_eq!(decoder.next_record(), Some(Ok(&b"{\"type\":7}"[..])));
        assert_eq!(decoder.next_record(), None);
        // Over the limit in one frame: the record is refused, and the decoder stays failed.
        assert_eq!(decoder.feed(b"{\"type\":1,\"target\":\"x\"}\x1e"), Ok(()));
        let refused = Some(Err(ProtocolError::MessageTooLarge { limit: 16 }));
        assert_eq!(decoder.next_record(), refused);
        assert!(decoder.feed(b"{\"type\":6}\x1e").is_err());
    }

    #[test]
    fn server_messages_have_the_exact_aspnet_shape() {
        assert_eq!(encoded(&HubMessage::Ping), "{\"type\":6}\u{1e}");
        assert_eq!(
            encoded(&HubMessage::completion(
                "123",
                CompletionResult::Result(json!(42))
            )),
            "{\"type\":3,\"invocationId\":\"123\",\"result\":42}\u{1e}"
        );
        assert_eq!(
            encoded(&HubMessage::completion("123", CompletionResult::Void)),
            "{\"type\":3,\"invocationId\":\"123\"}\u{1e}"
        );
        assert_eq!(
            encoded(&HubMessage::completion(
                "123",
                CompletionResult::Error("It didn't work!".into())
            )),
            "{\"type\":3,\"invocationId\":\"123\",\"error\":\"It didn't work!\"}\u{1e}"
        );
        assert_eq!(
            encoded(&HubMessage::invocation(
                "Send",
                vec![json!(42), json!("Test Message")]
            )),
            "{\"type\":1,\"target\":\"Send\",\"arguments\":[42,\"Test Message\"]}\u{1e}"
        );
        assert_eq!(
            encoded(&HubMessage::close(None, false)),
            "{\"type\":7}\u{1e}"
        );
        assert_eq!(
            encoded(&HubMessage::close(Some("Connection closed because of an error!".into()), true)),
            "{\"type\":7,\"error\":\"Connection closed because of an error!\",\"allowReconnect\":true}\u{1e}"
        );
        assert_eq!(
            encoded(&HubMessage::Sequence { sequence_id: 1234 }),
            "{\"type\":9,\"sequenceId\":1234}\u{1e}"
        );
    }

    /// Records exactly as `@microsoft/signalr` 10.0.11 `JsonHubProtocol.writeMessage` produces them.
    #[test]
    fn decodes_what_the_javascript_client_sends() {
        let cases: Vec<(&str, HubMessage)> = vec![
            (
                "{\"target\":\"Send\",\"arguments\":[42,\"hi\"],\"invocationId\":\"0\",\"type\":1}\u{1e}",
                HubMessage::Invocation {
                    headers: Headers::new(),
                    invocation_id: Some("0".into()),
                    target: "Send".into(),
                    arguments: vec![json!(42), json!("hi")],
                    stream_ids: vec![],
                },
            ),
            (
                "{\"target\":\"Send\",\"arguments\":[42,\"hi\"],\"type\":1}\u{1e}",
                HubMessage::invocation("Send", vec![json!(42), json!("hi")]),
            ),
            (
                "{\"target\":\"Upload\",\"arguments\":[],\"invocationId\":\"1\",\"streamIds\":[\"2\"],\"type\":1}\u{1e}",
                HubMessage::Invocation {
                    headers: Headers::new(),
                    invocation_id: Some("1".into()),
                    target: "Upload".into(),
                    arguments: vec![],
                    stream_ids: vec!["2".into()],
                },
            ),
            (
                "{\"target\":\"Counter\",\"arguments\":[10,500],\"invocationId\":\"3\",\"type\":4}\u{1e}",
                HubMessage::StreamInvocation {
                    headers: Headers::new(),
                    invocation_id: "3".into(),
                    target: "Counter".into(),
                    arguments: vec![json!(10), json!(500)],
                    stream_ids: vec![],
                },
            ),
            (
                "{\"invocationId\":\"3\",\"type\":5}\u{1e}",
                HubMessage::CancelInvocation {
                    headers: Headers::new(),
                    invocation_id: "3".into(),
                },
            ),
            (
                "{\"invocationId\":\"2\",\"item\":{\"a\":1},\"type\":2}\u{1e}",
                HubMessage::stream_item("2", json!({"a": 1})),
            ),
            (
                "{\"invocationId\":\"2\",\"type\":3}\u{1e}",
                HubMessage::completion("2", CompletionResult::Void),
            ),
            (
                "{\"error\":\"boom\",\"invocationId\":\"2\",\"type\":3}\u{1e}",
                HubMessage::completion("2", CompletionResult::Error("boom".into())),
            ),
            (
                "{\"invocationId\":\"2\",\"result\":[1.5,-3,null,true],\"type\":3}\u{1e}",
                HubMessage::completion(
                    "2",
                    CompletionResult::Result(json!([1.5, -3, null, true])),
                ),
            ),
            ("{\"type\":6}\u{1e}", HubMessage::Ping),
            ("{\"type\":7}\u{1e}", HubMessage::close(None, false)),
            (
                "{\"type\":8,\"sequenceId\":36}\u{1e}",
                HubMessage::Ack { sequence_id: 36 },
            ),
            (
                "{\"type\":9,\"sequenceId\":300}\u{1e}",
                HubMessage::Sequence { sequence_id: 300 },
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(decode_all(&[wire.as_bytes()]), vec![Ok(expected)], "{wire}");
        }
    }

    #[test]
    fn several_records_in_one_frame() {
        let frame = b"{\"type\":6}\x1e{\"type\":8,\"sequenceId\":1}\x1e{\"type\":7}\x1e";
        assert_eq!(
            decode_all(&[frame]),
            vec![
                Ok(HubMessage::Ping),
                Ok(HubMessage::Ack { sequence_id: 1 }),
                Ok(HubMessage::close(None, false)),
            ]
        );
    }

    #[test]
    fn a_record_split_across_frames_in_every_place() {
        let wire = "{\"type\":6}\u{1e}{\"type\":1,\"target\":\"Send\",\"arguments\":[\"é\"]}\u{1e}";
        let bytes = wire.as_bytes();
        for split in 0..=bytes.len() {
            let (first, second) = bytes.split_at(split);
            assert_eq!(
                decode_all(&[first, second]),
                vec![
                    Ok(HubMessage::Ping),
                    Ok(HubMessage::invocation("Send", vec![json!("é")])),
                ],
                "split at {split}"
            );
        }
        let byte_frames: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&byte_frames).len(), 2);
    }

    #[test]
    fn incomplete_record_larger_than_the_limit_fails_before_buffering() {
        let mut decoder = JsonDecoder::new(16);
        assert_eq!(decoder.feed(b"{\"type\":"), Ok(()));
        assert_eq!(
            decoder.feed(b"6,\"padding\":\"xxxxxxxx"),
            Err(ProtocolError::MessageTooLarge { limit: 16 })
        );
        // The decoder stays failed: the stream cannot be resynchronised.
        assert_eq!(
            decoder.feed(b"{\"type\":6}\x1e"),
            Err(ProtocolError::MessageTooLarge { limit: 16 })
        );
        assert_eq!(decoder.next_message(), None);
    }

    #[test]
    fn complete_record_larger_than_the_limit_is_rejected() {
        let mut decoder = JsonDecoder::new(16);
        let result = decoder.feed(b"{\"type\":6}\x1e{\"type\":6,\"pad\":\"xxxxxx\"}\x1e");
        assert_eq!(result, Ok(()));
        assert_eq!(decoder.next_message(), Some(Ok(HubMessage::Ping)));
        assert_eq!(
            decoder.next_message(),
            Some(Err(ProtocolError::MessageTooLarge { limit: 16 }))
        );
        assert!(decoder.feed(b"{\"type\":6}\x1e").is_err());
    }

    #[test]
    fn record_of_exactly_the_limit_is_accepted() {
        let record = b"{\"type\":6}";
        let mut decoder = JsonDecoder::new(record.len());
        assert_eq!(decoder.feed(record), Ok(()));
        assert_eq!(decoder.feed(&[RECORD_SEPARATOR]), Ok(()));
        assert_eq!(decoder.next_message(), Some(Ok(HubMessage::Ping)));
        assert_eq!(decoder.next_message(), None);
    }

    #[test]
    fn a_bad_record_does_not_hide_the_next_one() {
        assert_eq!(
            decode_all(&[b"{\"type\":42}\x1e{\"type\":6}\x1e"]),
            vec![
                Err(ProtocolError::UnknownMessageType(42)),
                Ok(HubMessage::Ping)
            ]
        );
    }

    #[test]
    fn typed_errors() {
        assert!(matches!(
            decode_one("{\"type\":"),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert!(matches!(decode_one(""), Err(ProtocolError::InvalidJson(_))));
        assert!(matches!(
            decode_one("[6]"),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert_eq!(decode_one("{}"), Err(ProtocolError::MissingType));
        assert_eq!(
            decode_one("{\"type\":null}"),
            Err(ProtocolError::MissingType)
        );
        assert_eq!(
            decode_one("{\"type\":\"1\"}"),
            Err(ProtocolError::InvalidType)
        );
        assert_eq!(
            decode_one("{\"type\":1.5}"),
            Err(ProtocolError::InvalidType)
        );
        assert_eq!(
            decode_one("{\"type\":99,\"future\":true}"),
            Err(ProtocolError::UnknownMessageType(99))
        );
        assert_eq!(
            decode_one("{\"type\":1,\"arguments\":[]}"),
            Err(ProtocolError::MissingField {
                message: MessageType::Invocation,
                field: "target"
            })
        );
        assert_eq!(
            decode_one("{\"type\":1,\"target\":\"\",\"arguments\":[]}"),
            Err(ProtocolError::MissingField {
                message: MessageType::Invocation,
                field: "target"
            })
        );
        assert_eq!(
            decode_one("{\"type\":1,\"target\":\"x\"}"),
            Err(ProtocolError::MissingField {
                message: MessageType::Invocation,
                field: "arguments"
            })
        );
        assert_eq!(
            decode_one("{\"type\":4,\"target\":\"x\",\"arguments\":[]}"),
            Err(ProtocolError::MissingField {
                message: MessageType::StreamInvocation,
                field: "invocationId"
            })
        );
        assert_eq!(
            decode_one("{\"type\":2,\"invocationId\":\"1\"}"),
            Err(ProtocolError::MissingField {
                message: MessageType::StreamItem,
                field: "item"
            })
        );
        assert_eq!(
            decode_one("{\"type\":3,\"invocationId\":\"1\",\"result\":1,\"error\":\"e\"}"),
            Err(ProtocolError::ErrorAndResult)
        );
        assert_eq!(
            decode_one("{\"type\":8}"),
            Err(ProtocolError::MissingField {
                message: MessageType::Ack,
                field: "sequenceId"
            })
        );
        assert!(matches!(
            decode_one("{\"type\":1,\"target\":5,\"arguments\":[]}"),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert!(matches!(
            decode_one("{\"type\":9,\"sequenceId\":-1}"),
            Err(ProtocolError::InvalidJson(_))
        ));
    }

    #[test]
    fn lenient_where_aspnet_is_lenient() {
        assert_eq!(
            decode_one("{\"type\":1,\"invocationId\":\"\",\"target\":\"x\",\"arguments\":[],\"extra\":{\"a\":[1]}}"),
            Ok(HubMessage::invocation("x", vec![]))
        );
        assert_eq!(decode_one(" \n{\"type\":6} "), Ok(HubMessage::Ping));
        assert_eq!(
            decode_one("{\"type\":3,\"invocationId\":\"1\",\"error\":null,\"result\":null}"),
            Ok(HubMessage::completion(
                "1",
                CompletionResult::Result(Value::Null)
            ))
        );
        let mut headers = Headers::new();
        headers.insert("Foo".into(), "Bar".into());
        assert_eq!(
            decode_one("{\"type\":5,\"headers\":{\"Foo\":\"Bar\"},\"invocationId\":\"1\"}"),
            Ok(HubMessage::CancelInvocation {
                headers,
                invocation_id: "1".into()
            })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let seeds: Vec<Vec<u8>> = all_message_kinds()
            .iter()
            .map(|message| {
                let mut out = Vec::new();
                let _ = encode(message, &mut out);
                out
            })
            .collect();
        let mut rng = super::super::test_support::Lcg::new(0x5eed);
        for round in 0..4000 {
            let mut input = seeds[round % seeds.len()].clone();
            rng.mutate(&mut input);
            let mut decoder = JsonDecoder::new(256);
            for chunk in input.chunks(1 + rng.below(16)) {
                if decoder.feed(chunk).is_err() {
                    break;
                }
                while decoder.next_message().is_some() {}
            }
        }
    }
}
