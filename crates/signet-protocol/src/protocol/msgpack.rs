//! The MessagePack hub protocol (HubProtocol.md, "MessagePack (MsgPack) encoding").
//!
//! Each message is a VarInt length prefix (7 bits per byte, least significant
//! first, at most 5 bytes, at most 2 GiB) followed by one MessagePack array:
//!
//! | type | layout |
//! | --- | --- |
//! | Invocation | `[1, Headers, InvocationId \| nil, Target, [Arguments], [StreamIds]?]` |
//! | StreamItem | `[2, Headers, InvocationId, Item]` |
//! | Completion | `[3, Headers, InvocationId, ResultKind, Result?]` (1 error, 2 void, 3 result) |
//! | StreamInvocation | `[4, Headers, InvocationId, Target, [Arguments], [StreamIds]?]` |
//! | CancelInvocation | `[5, Headers, InvocationId]` |
//! | Ping | `[6]` |
//! | Close | `[7, Error \| nil, AllowReconnect?]` |
//! | Ack | `[8, SequenceId]` |
//! | Sequence | `[9, SequenceId]` |
//!
//! Reading follows ASP.NET Core: StreamIds and AllowReconnect are optional
//! (the JavaScript client leaves StreamIds out when there is no upload stream and
//! sends Close as `[7, nil]`), slots past the known ones are ignored so newer
//! peers can append some, and an empty invocation id means "none". Writing also
//! follows ASP.NET Core byte for byte: Invocation and StreamInvocation always
//! carry a (possibly empty) StreamIds array, Close always carries AllowReconnect.
//!
//! Values are mapped to and from `serde_json::Value` as described in [`value`]; bin and
//! timestamps keep their type through the model ([`super::typed`]). An argument holding a str
//! that is not UTF-8 fails that invocation alone
//! ([`ProtocolError::InvocationBinding`]); anywhere else it is a protocol error.

pub mod value;

use serde_json::Value;

use self::value::{
    write_array_len, write_bool, write_map_len, write_nil, write_str, write_uint, write_value,
    Reader,
};
use super::buffer::InboundBuffer;
use super::error::ProtocolError;
use super::message::{CompletionResult, Headers, HubMessage, MessageType};

/// Largest body a length prefix can announce (HubProtocol.md, "VarInt").
pub const MAX_BODY_LEN: usize = 0x7fff_ffff;

const RESULT_KIND_ERROR: u64 = 1;
const RESULT_KIND_VOID: u64 = 2;
const RESULT_KIND_RESULT: u64 = 3;

/// Splits incoming binary frames into length-prefixed messages and decodes them.
///
/// Frames may carry several messages, and a message may span several frames.
/// Call [`MessagePackDecoder::feed`] with each frame, then
/// [`MessagePackDecoder::next_message`] until it returns `None`.
#[derive(Debug)]
pub struct MessagePackDecoder {
    buffer: InboundBuffer,
    max_message_size: usize,
}

impl MessagePackDecoder {
    /// `max_message_size` bounds one message body in bytes, prefix excluded.
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buffer: InboundBuffer::default(),
            max_message_size,
        }
    }

    /// Adds one received frame.
    ///
    /// Fails as soon as a length prefix is malformed or announces a body over the
    /// limit, before that body is buffered. After a failure the decoder stays failed.
    pub fn feed(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        self.buffer.check_usable()?;
        self.buffer.append(frame);
        loop {
            let incomplete = self.buffer.incomplete();
            let (body_len, prefix_len) = match read_length_prefix(incomplete) {
                Ok(Some(prefix)) => prefix,
                Ok(None) => return Ok(()),
                Err(error) => return Err(self.buffer.fail(error)),
            };
            if body_len > self.max_message_size {
                return Err(self.buffer.fail(ProtocolError::MessageTooLarge {
                    limit: self.max_message_size,
                }));
            }
            let total = prefix_len + body_len;
            if incomplete.len() < total {
                return Ok(());
            }
            self.buffer.extend_complete(total);
        }
    }

    /// The next complete message, `None` when more frames are needed.
    ///
    /// An `Err` for one message (bad layout, unknown type, unsupported value)
    /// has consumed that message, so the caller may continue.
    pub fn next_message(&mut self) -> Option<Result<HubMessage, ProtocolError>> {
        let ready = self.buffer.ready();
        // `feed` validated every prefix in the ready region.
        let (body_len, prefix_len) = read_length_prefix(ready).ok().flatten()?;
        let body = ready.get(prefix_len..prefix_len + body_len)?;
        let result = parse_message(body);
        self.buffer.consume(prefix_len + body_len);
        Some(result)
    }
}

/// Reads a VarInt length prefix: `Ok(None)` when more bytes are needed,
/// otherwise the body length and the prefix length.
pub fn read_length_prefix(bytes: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
    let mut length: usize = 0;
    for (index, &byte) in bytes.iter().take(5).enumerate() {
        if index == 4 && byte > 0x07 {
            // The JavaScript client's own wording for the same condition.
            return Err(ProtocolError::InvalidLengthPrefix(
                "Messages bigger than 2GB are not supported.",
            ));
        }
        length |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((length, index + 1)));
        }
    }
    Ok(None)
}

/// Appends `message`, length prefix included, to `out`.
///
/// Fails only for a body over [`MAX_BODY_LEN`]; `out` is then left as it was.
pub fn encode(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let start = out.len();
    // Reserve one prefix byte and write the body after it: most messages are
    // under 128 bytes, so the prefix fits and nothing moves.
    out.push(0);
    write_body(message, out);
    let body_len = out.len() - start - 1;
    if body_len > MAX_BODY_LEN {
        out.truncate(start);
        return Err(ProtocolError::MessageTooLarge {
            limit: MAX_BODY_LEN,
        });
    }
    let mut prefix = [0u8; 5];
    let mut prefix_len = 0;
    let mut remaining = body_len;
    loop {
        let mut byte = (remaining & 0x7f) as u8;
        remaining >>= 7;
        if remaining > 0 {
            byte |= 0x80;
        }
        prefix[prefix_len] = byte;
        prefix_len += 1;
        if remaining == 0 {
            break;
        }
    }
    out[start] = prefix[0];
    if prefix_len > 1 {
        out.extend_from_slice(&prefix[1..prefix_len]);
        out[start + 1..].rotate_right(prefix_len - 1);
    }
    Ok(())
}

fn write_headers(out: &mut Vec<u8>, headers: &Headers) {
    write_map_len(out, headers.len());
    for (key, value) in headers {
        write_str(out, key);
        write_str(out, value);
    }
}

fn write_values(out: &mut Vec<u8>, values: &[Value]) {
    write_array_len(out, values.len());
    for value in values {
        write_value(out, value);
    }
}

fn write_strings(out: &mut Vec<u8>, strings: &[String]) {
    write_array_len(out, strings.len());
    for string in strings {
        write_str(out, string);
    }
}

/// An `Invocation` (whose id is optional: nil without one) or a `StreamInvocation`.
fn write_invocation(
    out: &mut Vec<u8>,
    kind: u64,
    headers: &Headers,
    invocation_id: Option<&str>,
    target: &str,
    arguments: &[Value],
    stream_ids: &[String],
) {
    write_array_len(out, 6);
    write_uint(out, kind);
    write_headers(out, headers);
    match invocation_id {
        Some(id) => write_str(out, id),
        None => write_nil(out),
    }
    write_str(out, target);
    write_values(out, arguments);
    write_strings(out, stream_ids);
}

/// A `Completion`: a void one has no result slot; an error or a result has its kind and value.
fn write_completion(
    out: &mut Vec<u8>,
    kind: u64,
    headers: &Headers,
    invocation_id: &str,
    result: &CompletionResult,
) {
    let len = if matches!(result, CompletionResult::Void) {
        4
    } else {
        5
    };
    write_array_len(out, len);
    write_uint(out, kind);
    write_headers(out, headers);
    write_str(out, invocation_id);
    match result {
        CompletionResult::Error(error) => {
            write_uint(out, RESULT_KIND_ERROR);
            write_str(out, error);
        }
        CompletionResult::Void => write_uint(out, RESULT_KIND_VOID),
        CompletionResult::Result(value) => {
            write_uint(out, RESULT_KIND_RESULT);
            write_value(out, value);
        }
    }
}

fn write_body(message: &HubMessage, out: &mut Vec<u8>) {
    let kind = u64::from(message.message_type().wire_number());
    match message {
        HubMessage::Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            let id = invocation_id.as_deref();
            write_invocation(out, kind, headers, id, target, arguments, stream_ids);
        }
        HubMessage::StreamInvocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            let id = Some(invocation_id.as_str());
            write_invocation(out, kind, headers, id, target, arguments, stream_ids);
        }
        HubMessage::StreamItem {
            headers,
            invocation_id,
            item,
        } => {
            write_array_len(out, 4);
            write_uint(out, kind);
            write_headers(out, headers);
            write_str(out, invocation_id);
            write_value(out, item);
        }
        HubMessage::Completion {
            headers,
            invocation_id,
            result,
        } => write_completion(out, kind, headers, invocation_id, result),
        HubMessage::CancelInvocation {
            headers,
            invocation_id,
        } => {
            write_array_len(out, 3);
            write_uint(out, kind);
            write_headers(out, headers);
            write_str(out, invocation_id);
        }
        HubMessage::Ping => {
            write_array_len(out, 1);
            write_uint(out, kind);
        }
        HubMessage::Close {
            error,
            allow_reconnect,
        } => {
            write_array_len(out, 3);
            write_uint(out, kind);
            match error {
                Some(error) => write_str(out, error),
                None => write_nil(out),
            }
            write_bool(out, *allow_reconnect);
        }
        HubMessage::Ack { sequence_id } | HubMessage::Sequence { sequence_id } => {
            write_array_len(out, 2);
            write_uint(out, kind);
            write_uint(out, *sequence_id);
        }
    }
}

/// The type of the first message in `frame`, one or more length-prefixed messages, read from
/// its first array slot without decoding the rest. `None` when `frame` does not start with a
/// whole message of a known type.
pub fn peek_type(frame: &[u8]) -> Option<MessageType> {
    let (length, prefix) = read_length_prefix(frame).ok()??;
    let body = frame.get(prefix..prefix.checked_add(length)?)?;
    let mut reader = Reader::new(body);
    reader.array_len().ok()?.filter(|&n| n > 0)?;
    let number = reader.integer().ok()??.as_i64()?;
    MessageType::from_wire(number)
}

/// Decodes one message body, without its length prefix.
pub fn parse_message(body: &[u8]) -> Result<HubMessage, ProtocolError> {
    let mut reader = Reader::new(body);
    let count = reader
        .array_len()?
        .ok_or(ProtocolError::InvalidMessagePack("message is not an array"))?;
    if count == 0 {
        return Err(ProtocolError::MissingType);
    }
    let number = reader
        .integer()?
        .and_then(|n| n.as_i64())
        .ok_or(ProtocolError::InvalidType)?;
    let kind = MessageType::from_wire(number).ok_or(ProtocolError::UnknownMessageType(number))?;
    let mut fields = Fields {
        reader,
        kind,
        count,
        index: 1,
    };
    Ok(match kind {
        MessageType::Invocation => {
            let headers = fields.headers()?;
            let invocation_id = fields.optional_str("invocationId")?;
            let (target, arguments, stream_ids) = fields.call(invocation_id.as_deref())?;
            HubMessage::Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            }
        }
        MessageType::StreamInvocation => {
            let headers = fields.headers()?;
            let invocation_id = fields.required_str("invocationId")?;
            let (target, arguments, stream_ids) = fields.call(Some(&invocation_id))?;
            HubMessage::StreamInvocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            }
        }
        MessageType::StreamItem => HubMessage::StreamItem {
            headers: fields.headers()?,
            invocation_id: fields.required_str("invocationId")?,
            item: fields.value("item")?,
        },
        MessageType::Completion => HubMessage::Completion {
            headers: fields.headers()?,
            invocation_id: fields.required_str("invocationId")?,
            result: match fields.unsigned("resultKind")? {
                RESULT_KIND_ERROR => CompletionResult::Error(fields.any_str("error")?),
                RESULT_KIND_VOID => CompletionResult::Void,
                RESULT_KIND_RESULT => CompletionResult::Result(fields.value("result")?),
                _ => return Err(fields.invalid("resultKind", "1, 2 or 3")),
            },
        },
        MessageType::CancelInvocation => HubMessage::CancelInvocation {
            headers: fields.headers()?,
            invocation_id: fields.required_str("invocationId")?,
        },
        MessageType::Ping => HubMessage::Ping,
        MessageType::Close => HubMessage::Close {
            error: fields.nullable_str("error")?,
            allow_reconnect: fields.optional_bool("allowReconnect")?,
        },
        MessageType::Ack => HubMessage::Ack {
            sequence_id: fields.unsigned("sequenceId")?,
        },
        MessageType::Sequence => HubMessage::Sequence {
            sequence_id: fields.unsigned("sequenceId")?,
        },
    })
}

/// Reads the slots of one message array in order, naming each in errors.
struct Fields<'a> {
    reader: Reader<'a>,
    kind: MessageType,
    /// Slots the array announced.
    count: usize,
    /// Slot about to be read.
    index: usize,
}

impl Fields<'_> {
    fn missing(&self, field: &'static str) -> ProtocolError {
        ProtocolError::MissingField {
            message: self.kind,
            field,
        }
    }

    fn invalid(&self, field: &'static str, expected: &'static str) -> ProtocolError {
        ProtocolError::InvalidField {
            message: self.kind,
            field,
            expected,
        }
    }

    /// Claims the next slot if the array has one.
    fn next_slot(&mut self) -> bool {
        if self.index < self.count {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn require(&mut self, field: &'static str) -> Result<(), ProtocolError> {
        if self.next_slot() {
            Ok(())
        } else {
            Err(self.missing(field))
        }
    }

    fn headers(&mut self) -> Result<Headers, ProtocolError> {
        self.require("headers")?;
        let expected = "a map of strings to strings";
        let len = self
            .reader
            .map_len()?
            .ok_or_else(|| self.invalid("headers", expected))?;
        let mut headers = Headers::new();
        for _ in 0..len {
            let key = self
                .reader
                .str()?
                .ok_or_else(|| self.invalid("headers", expected))?;
            let value = self
                .reader
                .str()?
                .ok_or_else(|| self.invalid("headers", expected))?;
            headers.insert(key.to_owned(), value.to_owned());
        }
        Ok(headers)
    }

    /// A string or nil that must be there; nil and empty both mean `None`.
    fn optional_str(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        Ok(self.nullable_str(field)?.filter(|text| !text.is_empty()))
    }

    /// A string or nil that must be there.
    fn nullable_str(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        self.require(field)?;
        if self.reader.nil()? {
            return Ok(None);
        }
        match self.reader.str()? {
            Some(text) => Ok(Some(text.to_owned())),
            None => Err(self.invalid(field, "a string or nil")),
        }
    }

    /// A non-empty string.
    fn required_str(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        self.optional_str(field)?.ok_or_else(|| self.missing(field))
    }

    /// A string, possibly empty.
    fn any_str(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        self.require(field)?;
        match self.reader.str()? {
            Some(text) => Ok(text.to_owned()),
            None => Err(self.invalid(field, "a string")),
        }
    }

    fn unsigned(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        self.require(field)?;
        self.reader
            .integer()?
            .and_then(|n| n.as_u64())
            .ok_or_else(|| self.invalid(field, "a non-negative integer"))
    }

    fn optional_bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        if !self.next_slot() {
            return Ok(false);
        }
        self.reader
            .bool()?
            .ok_or_else(|| self.invalid(field, "a boolean"))
    }

    /// A payload value, one level inside the message array. Outside arguments (a stream item, a
    /// result) a str that is not UTF-8 fails the message as a protocol error.
    fn value(&mut self, field: &'static str) -> Result<Value, ProtocolError> {
        self.require(field)?;
        let value = self.reader.value(1)?;
        if self.reader.invalid_utf8() {
            return Err(ProtocolError::InvalidMessagePack(
                "string is not valid UTF-8",
            ));
        }
        Ok(value)
    }

    /// The target, arguments and stream ids of an Invocation or StreamInvocation. An argument
    /// holding a str that is not UTF-8 fails that invocation only (a binding failure, as in
    /// ASP.NET Core), once the whole message has been read.
    fn call(
        &mut self,
        invocation_id: Option<&str>,
    ) -> Result<(String, Vec<Value>, Vec<String>), ProtocolError> {
        let target = self.required_str("target")?;
        let arguments = self.arguments()?;
        let stream_ids = self.stream_ids()?;
        if self.reader.invalid_utf8() {
            return Err(ProtocolError::InvocationBinding {
                invocation_id: invocation_id
                    .filter(|id| !id.is_empty())
                    .map(str::to_string),
                target,
                detail: "an argument holds a string that is not valid UTF-8",
            });
        }
        Ok((target, arguments, stream_ids))
    }

    fn arguments(&mut self) -> Result<Vec<Value>, ProtocolError> {
        self.require("arguments")?;
        let len = self
            .reader
            .array_len()?
            .ok_or_else(|| self.invalid("arguments", "an array"))?;
        // Each argument takes at least one byte, so the body bounds the allocation.
        let mut arguments = Vec::with_capacity(len.min(16));
        for _ in 0..len {
            arguments.push(self.reader.value(2)?);
        }
        Ok(arguments)
    }

    fn stream_ids(&mut self) -> Result<Vec<String>, ProtocolError> {
        if !self.next_slot() {
            return Ok(Vec::new());
        }
        let expected = "an array of strings";
        let len = self
            .reader
            .array_len()?
            .ok_or_else(|| self.invalid("streamIds", expected))?;
        let mut ids = Vec::with_capacity(len.min(16));
        for _ in 0..len {
            let id = self
                .reader
                .str()?
                .ok_or_else(|| self.invalid("streamIds", expected))?;
            ids.push(id.to_owned());
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMIT: usize = 32 * 1024;

    fn hex(text: &str) -> Vec<u8> {
        let clean: String = text.split_whitespace().collect();
        (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect()
    }

    fn encoded(message: &HubMessage) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out).unwrap();
        out
    }

    fn decode_all(frames: &[&[u8]]) -> Vec<Result<HubMessage, ProtocolError>> {
        let mut decoder = MessagePackDecoder::new(LIMIT);
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

    fn all_message_kinds() -> Vec<HubMessage> {
        let mut headers = Headers::new();
        headers.insert("x".into(), "y".into());
        vec![
            HubMessage::Invocation {
                headers: headers.clone(),
                invocation_id: Some("1".into()),
                target: "Send".into(),
                arguments: vec![json!(42), json!("text"), json!({"a": [1, 2.5, null, -7]})],
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
            HubMessage::completion("3", CompletionResult::Error(String::new())),
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
            HubMessage::Ack { sequence_id: 36 },
            HubMessage::Sequence {
                sequence_id: u64::MAX,
            },
        ]
    }

    #[test]
    fn every_message_type_round_trips() {
        for message in all_message_kinds() {
            let bytes = encoded(&message);
            assert_eq!(decode_all(&[&bytes]), vec![Ok(message)]);
        }
    }

    #[test]
    fn server_messages_match_the_spec_and_aspnet_bytes() {
        let id_xyz = "a3 78 79 7a";
        let cases = [
            (HubMessage::Ping, "02 91 06".to_string()),
            (
                HubMessage::completion("xyz", CompletionResult::Error("Error".into())),
                format!("0e 95 03 80 {id_xyz} 01 a5 45 72 72 6f 72"),
            ),
            (
                HubMessage::completion("xyz", CompletionResult::Void),
                format!("08 94 03 80 {id_xyz} 02"),
            ),
            (
                HubMessage::completion("xyz", CompletionResult::Result(json!(42))),
                format!("09 95 03 80 {id_xyz} 03 2a"),
            ),
            (
                HubMessage::stream_item("xyz", json!(42)),
                format!("08 94 02 80 {id_xyz} 2a"),
            ),
            (
                HubMessage::Invocation {
                    headers: Headers::new(),
                    invocation_id: Some("xyz".into()),
                    target: "method".into(),
                    arguments: vec![json!(42)],
                    stream_ids: vec![],
                },
                format!("11 96 01 80 {id_xyz} a6 6d 65 74 68 6f 64 91 2a 90"),
            ),
            (
                HubMessage::invocation("method", vec![json!(42)]),
                "0e 96 01 80 c0 a6 6d 65 74 68 6f 64 91 2a 90".to_string(),
            ),
            (
                HubMessage::close(Some("xyz".into()), true),
                format!("07 93 07 {id_xyz} c3"),
            ),
            (HubMessage::close(None, false), "04 93 07 c0 c2".to_string()),
            (
                HubMessage::Ack { sequence_id: 36 },
                "03 92 08 24".to_string(),
            ),
            (
                HubMessage::Sequence { sequence_id: 300 },
                "05 92 09 cd 01 2c".to_string(),
            ),
        ];
        for (message, wire) in cases {
            assert_eq!(encoded(&message), hex(&wire), "{message:?}");
        }
    }

    /// Frames exactly as `@microsoft/signalr-protocol-msgpack` 10.0.11 `writeMessage` produces them.
    #[test]
    fn decodes_what_the_javascript_client_sends() {
        let no_streams = Vec::<String>::new();
        let cases = [
            (
                "0f950180a130a453656e64922aa26869",
                HubMessage::Invocation {
                    headers: Headers::new(),
                    invocation_id: Some("0".into()),
                    target: "Send".into(),
                    arguments: vec![json!(42), json!("hi")],
                    stream_ids: no_streams.clone(),
                },
            ),
            (
                "0e950180c0a453656e64922aa26869",
                HubMessage::invocation("Send", vec![json!(42), json!("hi")]),
            ),
            (
                "10960180a131a655706c6f61649091a132",
                HubMessage::Invocation {
                    headers: Headers::new(),
                    invocation_id: Some("1".into()),
                    target: "Upload".into(),
                    arguments: vec![],
                    stream_ids: vec!["2".into()],
                },
            ),
            (
                "12950480a133a7436f756e746572920acd01f4",
                HubMessage::StreamInvocation {
                    headers: Headers::new(),
                    invocation_id: "3".into(),
                    target: "Counter".into(),
                    arguments: vec![json!(10), json!(500)],
                    stream_ids: no_streams,
                },
            ),
            (
                "05930580a133",
                HubMessage::CancelInvocation {
                    headers: Headers::new(),
                    invocation_id: "3".into(),
                },
            ),
            (
                "09940280a13281a16101",
                HubMessage::stream_item("2", json!({"a": 1})),
            ),
            (
                "06940380a13202",
                HubMessage::completion("2", CompletionResult::Void),
            ),
            (
                "0b950380a13201a4626f6f6d",
                HubMessage::completion("2", CompletionResult::Error("boom".into())),
            ),
            (
                "13950380a1320394cb3ff8000000000000fdc0c3",
                HubMessage::completion("2", CompletionResult::Result(json!([1.5, -3, null, true]))),
            ),
            ("029106", HubMessage::Ping),
            ("039207c0", HubMessage::close(None, false)),
            ("03920824", HubMessage::Ack { sequence_id: 36 }),
            ("059209cd012c", HubMessage::Sequence { sequence_id: 300 }),
        ];
        for (wire, expected) in cases {
            assert_eq!(decode_all(&[&hex(wire)]), vec![Ok(expected)], "{wire}");
        }
    }

    #[test]
    fn headers_are_read() {
        let body =
            hex("96 01 82 a1 78 a1 79 a1 7a a1 7a a3 78 79 7a a6 6d 65 74 68 6f 64 91 2a 90");
        let mut headers = Headers::new();
        headers.insert("x".into(), "y".into());
        headers.insert("z".into(), "z".into());
        assert_eq!(
            parse_message(&body),
            Ok(HubMessage::Invocation {
                headers,
                invocation_id: Some("xyz".into()),
                target: "method".into(),
                arguments: vec![json!(42)],
                stream_ids: vec![],
            })
        );
    }

    #[test]
    fn length_prefix() {
        assert_eq!(read_length_prefix(&[0x35]), Ok(Some((0x35, 1))));
        assert_eq!(read_length_prefix(&[0x80, 0x29]), Ok(Some((0x1480, 2))));
        assert_eq!(
            read_length_prefix(&[0xff, 0xff, 0xff, 0xff, 0x07]),
            Ok(Some((0x7fff_ffff, 5)))
        );
        assert_eq!(read_length_prefix(&[0xff, 0xff]), Ok(None));
        assert_eq!(read_length_prefix(&[]), Ok(None));
        assert!(matches!(
            read_length_prefix(&[0xff, 0xff, 0xff, 0xff, 0x08]),
            Err(ProtocolError::InvalidLengthPrefix(_))
        ));
    }

    #[test]
    fn long_bodies_get_multi_byte_prefixes() {
        for len in [126, 127, 128, 200, 16_383, 16_384, 70_000] {
            let message = HubMessage::stream_item("1", json!("x".repeat(len)));
            let bytes = encoded(&message);
            let (body_len, prefix_len) = read_length_prefix(&bytes).unwrap().unwrap();
            assert_eq!(prefix_len + body_len, bytes.len());
            let mut decoder = MessagePackDecoder::new(100_000);
            decoder.feed(&bytes).unwrap();
            assert_eq!(decoder.next_message(), Some(Ok(message)));
        }
    }

    #[test]
    fn encoding_appends_to_a_reused_buffer() {
        let mut out = vec![0xaa];
        encode(&HubMessage::Ping, &mut out).unwrap();
        encode(
            &HubMessage::stream_item("1", json!("y".repeat(300))),
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..4], &[0xaa, 0x02, 0x91, 0x06]);
        let mut decoder = MessagePackDecoder::new(LIMIT);
        decoder.feed(&out[1..]).unwrap();
        assert_eq!(decoder.next_message(), Some(Ok(HubMessage::Ping)));
        assert!(matches!(
            decoder.next_message(),
            Some(Ok(HubMessage::StreamItem { .. }))
        ));
        assert_eq!(decoder.next_message(), None);
    }

    #[test]
    fn batched_and_split_frames() {
        let mut wire = Vec::new();
        for message in all_message_kinds() {
            encode(&message, &mut wire).unwrap();
        }
        let expected: Vec<_> = all_message_kinds().into_iter().map(Ok).collect();
        assert_eq!(decode_all(&[&wire]), expected);
        for split in 0..=wire.len() {
            let (first, second) = wire.split_at(split);
            assert_eq!(decode_all(&[first, second]), expected, "split at {split}");
        }
        let single_bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(&single_bytes), expected);
    }

    #[test]
    fn oversized_messages_fail_at_the_prefix() {
        let mut decoder = MessagePackDecoder::new(10);
        // The prefix alone announces 11 bytes: rejected before the body arrives.
        assert_eq!(
            decoder.feed(&[0x0b]),
            Err(ProtocolError::MessageTooLarge { limit: 10 })
        );
        assert!(decoder.feed(&hex("029106")).is_err());
        assert_eq!(decoder.next_message(), None);

        let mut decoder = MessagePackDecoder::new(10);
        let mut wire = hex("029106");
        wire.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decoder.feed(&wire),
            Err(ProtocolError::InvalidLengthPrefix(_))
        ));
    }

    #[test]
    fn typed_errors() {
        let parse = |wire: &str| parse_message(&hex(wire));
        assert!(matches!(
            parse(""),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        assert!(matches!(
            parse("06"),
            Err(ProtocolError::InvalidMessagePack(_))
        ));
        assert_eq!(parse("90"), Err(ProtocolError::MissingType));
        assert_eq!(parse("91 a1 31"), Err(ProtocolError::InvalidType));
        assert_eq!(
            parse("91 cf ffffffffffffffff"),
            Err(ProtocolError::InvalidType)
        );
        assert_eq!(
            parse("92 0a c0"),
            Err(ProtocolError::UnknownMessageType(10))
        );
        assert_eq!(parse("91 ff"), Err(ProtocolError::UnknownMessageType(-1)));
        assert_eq!(
            parse("94 01 80 c0 a1 78"),
            Err(ProtocolError::MissingField {
                message: MessageType::Invocation,
                field: "arguments"
            })
        );
        assert_eq!(
            parse("95 01 80 c0 a0 90"),
            Err(ProtocolError::MissingField {
                message: MessageType::Invocation,
                field: "target"
            })
        );
        assert_eq!(
            parse("95 01 80 c0 2a 90"),
            Err(ProtocolError::InvalidField {
                message: MessageType::Invocation,
                field: "target",
                expected: "a string or nil"
            })
        );
        assert_eq!(
            parse("95 01 c0 c0 a1 78 90"),
            Err(ProtocolError::InvalidField {
                message: MessageType::Invocation,
                field: "headers",
                expected: "a map of strings to strings"
            })
        );
        assert_eq!(
            parse("95 04 80 c0 a1 78 90"),
            Err(ProtocolError::MissingField {
                message: MessageType::StreamInvocation,
                field: "invocationId"
            })
        );
        assert_eq!(
            parse("94 03 80 a1 31 04"),
            Err(ProtocolError::InvalidField {
                message: MessageType::Completion,
                field: "resultKind",
                expected: "1, 2 or 3"
            })
        );
        assert_eq!(
            parse("94 03 80 a1 31 03"),
            Err(ProtocolError::MissingField {
                message: MessageType::Completion,
                field: "result"
            })
        );
        assert_eq!(
            parse("92 08 ff"),
            Err(ProtocolError::InvalidField {
                message: MessageType::Ack,
                field: "sequenceId",
                expected: "a non-negative integer"
            })
        );
        assert_eq!(
            parse("91 07"),
            Err(ProtocolError::MissingField {
                message: MessageType::Close,
                field: "error"
            })
        );
        assert_eq!(
            parse("94 02 80 a1 31 d4 07 00"),
            Err(ProtocolError::UnsupportedExtension(7))
        );
    }

    /// A str that is not UTF-8 in an argument fails that invocation alone (the decoder goes on
    /// with the next message); in an id, a target or a stream item it is a protocol error.
    #[test]
    fn invalid_utf8_fails_an_invocation_or_the_message() {
        // [1, {}, "7", "Echo", ["\xc3\x28"]], [4, {}, "8", "Echo", [{"k": "\xc3\x28"}]], then a Ping.
        let frames = hex("0e 95 01 80 a1 37 a4 45 63 68 6f 91 a2 c3 28
             11 95 04 80 a1 38 a4 45 63 68 6f 91 81 a1 6b a2 c3 28
             02 91 06");
        let messages = decode_all(&[&frames]);
        let binding = |id: &str| {
            Err(ProtocolError::InvocationBinding {
                invocation_id: Some(id.to_string()),
                target: "Echo".to_string(),
                detail: "an argument holds a string that is not valid UTF-8",
            })
        };
        assert_eq!(
            messages,
            vec![binding("7"), binding("8"), Ok(HubMessage::Ping)]
        );
        // Non-blocking: no id to answer.
        let frames = hex("0d 95 01 80 a0 a4 45 63 68 6f 91 a2 c3 28");
        assert!(matches!(
            &decode_all(&[&frames])[..],
            [Err(ProtocolError::InvocationBinding {
                invocation_id: None,
                ..
            })]
        ));
        // In the target, and in a stream item.
        for frames in [
            "09 95 01 80 a1 37 a2 c3 28 90",
            "08 94 02 80 a1 37 a2 c3 28",
        ] {
            assert_eq!(
                decode_all(&[&hex(frames)]),
                vec![Err(ProtocolError::InvalidMessagePack(
                    "string is not valid UTF-8"
                ))],
                "{frames}"
            );
        }
    }

    #[test]
    fn extra_trailing_slots_are_ignored() {
        assert_eq!(parse_message(&hex("93 06 c0 c0")), Ok(HubMessage::Ping));
        assert_eq!(
            parse_message(&hex("94 08 05 a1 78 90")),
            Ok(HubMessage::Ack { sequence_id: 5 })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seeds = Vec::new();
        for message in all_message_kinds() {
            seeds.push(encoded(&message));
        }
        seeds.push(hex("0c 94 02 80 a1 31 c7 0c ff 00 00 00 01 00 00 00"));
        let mut rng = super::super::test_support::Lcg::new(0xc0ffee);
        for round in 0..6000 {
            let mut input = seeds[round % seeds.len()].clone();
            rng.mutate(&mut input);
            let mut decoder = MessagePackDecoder::new(256);
            for chunk in input.chunks(1 + rng.below(16)) {
                if decoder.feed(chunk).is_err() {
                    break;
                }
                while decoder.next_message().is_some() {}
            }
            // Bodies straight to the parser too, past the framing.
            let _ = parse_message(&input);
        }
    }
}
