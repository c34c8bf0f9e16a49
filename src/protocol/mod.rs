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

mod buffer;
mod error;
pub mod json;
mod message;
pub mod msgpack;

pub use self::error::ProtocolError;
pub use self::json::JsonDecoder;
pub use self::message::{CompletionResult, Headers, HubMessage, MessageType};
pub use self::msgpack::MessagePackDecoder;

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
