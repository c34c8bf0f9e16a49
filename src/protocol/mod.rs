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
//! Reference: dotnet/aspnetcore `src/SignalR/docs/specs/HubProtocol.md`.

mod error;
mod message;

pub use self::error::ProtocolError;
pub use self::message::{CompletionResult, Headers, HubMessage, MessageType};
