//! The hub messages that both wire protocols carry, independent of their encoding.
//!
//! Payload values (invocation arguments, stream items, completion results) are
//! [`serde_json::Value`] whatever the negotiated protocol, so the hub layer binds
//! arguments one way. The MessagePack codec converts to and from this model; see
//! [`super::msgpack`] for how MessagePack-only types (binary, extension types,
//! non-string map keys) are mapped.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

/// Message headers: string keys and string values.
///
/// The spec defines no header, so nothing interprets them; they are kept so a
/// message can be logged or forwarded faithfully. An empty map does not allocate.
pub type Headers = HashMap<String, String>;

/// The numeric `type` every hub message carries on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Invocation = 1,
    StreamItem = 2,
    Completion = 3,
    StreamInvocation = 4,
    CancelInvocation = 5,
    Ping = 6,
    Close = 7,
    Ack = 8,
    Sequence = 9,
}

impl MessageType {
    /// Maps a wire number to a message type; `None` for numbers this protocol
    /// version does not define (the spec lets newer peers add types).
    pub fn from_wire(number: i64) -> Option<Self> {
        Some(match number {
            1 => Self::Invocation,
            2 => Self::StreamItem,
            3 => Self::Completion,
            4 => Self::StreamInvocation,
            5 => Self::CancelInvocation,
            6 => Self::Ping,
            7 => Self::Close,
            8 => Self::Ack,
            9 => Self::Sequence,
            _ => return None,
        })
    }

    /// The number written in the `type` property or first array slot.
    pub fn wire_number(self) -> u8 {
        self as u8
    }
}

impl MessageType {
    /// Whether stateful reconnect numbers, buffers and replays messages of this type: only the
    /// invocation-related types 1 to 5 (HubProtocol.md, "Trackable messages").
    pub fn is_trackable(self) -> bool {
        matches!(
            self,
            Self::Invocation
                | Self::StreamItem
                | Self::Completion
                | Self::StreamInvocation
                | Self::CancelInvocation
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Invocation => "Invocation",
            Self::StreamItem => "StreamItem",
            Self::Completion => "Completion",
            Self::StreamInvocation => "StreamInvocation",
            Self::CancelInvocation => "CancelInvocation",
            Self::Ping => "Ping",
            Self::Close => "Close",
            Self::Ack => "Ack",
            Self::Sequence => "Sequence",
        })
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionResult {
    /// The method returned nothing (or a stream ended normally).
    Void,
    /// The method returned a value; `Value::Null` is a real `null` result,
    /// distinct from [`CompletionResult::Void`].
    Result(Value),
    /// The invocation failed with this message.
    Error(String),
}

/// One message of the SignalR hub protocol (HubProtocol.md, types 1 to 9).
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// Call `target` on the peer. Without an invocation id the call is
    /// non-blocking and the callee must not answer.
    Invocation {
        headers: Headers,
        invocation_id: Option<String>,
        target: String,
        arguments: Vec<Value>,
        /// Ids of client-to-server streams feeding this call; empty when none.
        stream_ids: Vec<String>,
    },
    /// One item of a stream, from the server for a `StreamInvocation` or from the
    /// client for an upload stream (then `invocation_id` is the stream id).
    StreamItem {
        headers: Headers,
        invocation_id: String,
        item: Value,
    },
    /// The end of an invocation or of a stream.
    Completion {
        headers: Headers,
        invocation_id: String,
        result: CompletionResult,
    },
    /// Call a streaming method; its results come back as `StreamItem`s.
    StreamInvocation {
        headers: Headers,
        invocation_id: String,
        target: String,
        arguments: Vec<Value>,
        stream_ids: Vec<String>,
    },
    /// Ask the callee to stop an invocation or a stream.
    CancelInvocation {
        headers: Headers,
        invocation_id: String,
    },
    /// Keep-alive; carries nothing.
    Ping,
    /// The sender is closing the connection, with an optional reason.
    Close {
        error: Option<String>,
        allow_reconnect: bool,
    },
    /// Stateful reconnect: every trackable message up to `sequence_id` arrived.
    Ack { sequence_id: u64 },
    /// Stateful reconnect: the next trackable message will carry `sequence_id`.
    Sequence { sequence_id: u64 },
}

impl HubMessage {
    /// A non-blocking invocation, the shape of every server-to-client call
    /// that expects no result.
    pub fn invocation(target: impl Into<String>, arguments: Vec<Value>) -> Self {
        Self::Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: target.into(),
            arguments,
            stream_ids: Vec::new(),
        }
    }

    /// The completion answering `invocation_id`.
    pub fn completion(invocation_id: impl Into<String>, result: CompletionResult) -> Self {
        Self::Completion {
            headers: Headers::new(),
            invocation_id: invocation_id.into(),
            result,
        }
    }

    /// One item of the stream `invocation_id`.
    pub fn stream_item(invocation_id: impl Into<String>, item: Value) -> Self {
        Self::StreamItem {
            headers: Headers::new(),
            invocation_id: invocation_id.into(),
            item,
        }
    }

    /// A close message; `allow_reconnect` tells auto-reconnecting clients to retry.
    pub fn close(error: Option<String>, allow_reconnect: bool) -> Self {
        Self::Close {
            error,
            allow_reconnect,
        }
    }

    /// The wire type of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Invocation { .. } => MessageType::Invocation,
            Self::StreamItem { .. } => MessageType::StreamItem,
            Self::Completion { .. } => MessageType::Completion,
            Self::StreamInvocation { .. } => MessageType::StreamInvocation,
            Self::CancelInvocation { .. } => MessageType::CancelInvocation,
            Self::Ping => MessageType::Ping,
            Self::Close { .. } => MessageType::Close,
            Self::Ack { .. } => MessageType::Ack,
            Self::Sequence { .. } => MessageType::Sequence,
        }
    }

    /// Whether stateful reconnect numbers, buffers and replays this message:
    /// only the invocation-related types 1 to 5 are, never Ping, Close, Ack or
    /// Sequence (HubProtocol.md, "Trackable messages").
    pub fn is_trackable(&self) -> bool {
        self.message_type().is_trackable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip() {
        for number in 1..=9 {
            let kind = MessageType::from_wire(number);
            assert_eq!(kind.map(|k| i64::from(k.wire_number())), Some(number));
        }
        assert_eq!(MessageType::from_wire(0), None);
        assert_eq!(MessageType::from_wire(10), None);
        assert_eq!(MessageType::from_wire(-1), None);
    }

    #[test]
    fn only_invocation_messages_are_trackable() {
        assert!(HubMessage::invocation("x", vec![]).is_trackable());
        assert!(HubMessage::completion("1", CompletionResult::Void).is_trackable());
        assert!(!HubMessage::Ping.is_trackable());
        assert!(!HubMessage::close(None, false).is_trackable());
        assert!(!HubMessage::Ack { sequence_id: 1 }.is_trackable());
        assert!(!HubMessage::Sequence { sequence_id: 1 }.is_trackable());
    }
}
