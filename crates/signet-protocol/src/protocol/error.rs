//! Why a hub message could not be framed, decoded or encoded.

use super::message::MessageType;

/// An error of the hub protocol codecs.
///
/// Framing errors ([`ProtocolError::MessageTooLarge`],
/// [`ProtocolError::InvalidLengthPrefix`]) leave the byte stream unusable, so the
/// connection has to be closed. Every other variant concerns one message whose
/// bytes were consumed; the decoder can go on with the next one, and the caller
/// decides: the spec lets a peer ignore [`ProtocolError::UnknownMessageType`],
/// while the rest are protocol errors that usually end the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message exceeds the maximum message size of {limit} bytes")]
    MessageTooLarge { limit: usize },

    #[error("invalid length prefix: {0}")]
    InvalidLengthPrefix(&'static str),

    /// The JSON text of a record did not parse, or a property had the wrong JSON type.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),

    #[error("invalid MessagePack: {0}")]
    InvalidMessagePack(&'static str),

    #[error("MessagePack extension type {0} is not supported")]
    UnsupportedExtension(i8),

    #[error("value nesting exceeds {limit} levels")]
    TooDeep { limit: usize },

    /// The message is not an object/array with a type, e.g. `{}` or `[]`.
    #[error("missing required property 'type'")]
    MissingType,

    #[error("'type' must be an integer")]
    InvalidType,

    /// A type number this protocol version does not define. The spec lets peers
    /// add types, so a receiver may skip the message and go on.
    #[error("unknown message type {0}")]
    UnknownMessageType(i64),

    #[error("{message} message is missing required property '{field}'")]
    MissingField {
        message: MessageType,
        field: &'static str,
    },

    #[error("{message} message has an invalid '{field}': expected {expected}")]
    InvalidField {
        message: MessageType,
        field: &'static str,
        expected: &'static str,
    },

    /// An invocation whose arguments could not be read (a MessagePack str that is not UTF-8):
    /// ASP.NET Core's `InvocationBindingFailureMessage`. The message was consumed and the
    /// connection can go on; the invocation fails with a completion error.
    #[error("the arguments of an invocation of '{target}' could not be read: {detail}")]
    InvocationBinding {
        invocation_id: Option<String>,
        target: String,
        detail: &'static str,
    },

    /// The text ASP.NET Core uses for the same protocol error.
    #[error("The 'error' and 'result' properties are mutually exclusive.")]
    ErrorAndResult,

    /// A message could not be written; no message built from the hub model does this.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

impl ProtocolError {
    /// Whether the byte stream itself is broken, so no later message can be read.
    pub fn is_framing(&self) -> bool {
        matches!(
            self,
            Self::MessageTooLarge { .. } | Self::InvalidLengthPrefix(_)
        )
    }
}
