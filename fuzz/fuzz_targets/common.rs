//! Shared by the hub protocol targets: cutting one input into transport frames and checking
//! that whatever decodes also re-encodes stably.

// Each target uses only part of this module.
#![allow(dead_code)]

use signet::protocol::{HubMessage, HubProtocol};

/// Largest message the decoders accept in the targets: small, so the size limits are reached.
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// Splits `data` into frames: the first byte seeds the frame lengths (1 to 64 bytes, or one
/// frame when it is zero), so records and length prefixes get cut at every position.
pub fn frames(data: &[u8]) -> Vec<&[u8]> {
    let Some((&seed, rest)) = data.split_first() else {
        return Vec::new();
    };
    if seed == 0 {
        return vec![rest];
    }
    let mut frames = Vec::new();
    let mut state = u32::from(seed);
    let mut rest = rest;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = (1 + (state >> 16) as usize % 64).min(rest.len());
        let (frame, tail) = rest.split_at(len);
        frames.push(frame);
        rest = tail;
    }
    frames
}

/// Feeds `frames` to a decoder of `protocol` and returns every message it decoded, stopping at
/// the first error (a connection ends there).
pub fn decode_all(protocol: HubProtocol, frames: &[&[u8]]) -> Vec<HubMessage> {
    let mut decoder = protocol.decoder(MAX_MESSAGE_SIZE);
    let mut messages = Vec::new();
    for frame in frames {
        if decoder.feed(frame).is_err() {
            return messages;
        }
        while let Some(next) = decoder.next_message() {
            match next {
                Ok(message) => messages.push(message),
                Err(_) => return messages,
            }
        }
    }
    messages
}

/// Encodes `message` with `protocol`, decodes it again with a decoder large enough for it, and
/// returns the decoded message with its encoding. The peek must agree with the decoded type.
pub fn reencode(protocol: HubProtocol, message: &HubMessage) -> Option<(HubMessage, Vec<u8>)> {
    let mut encoded = Vec::new();
    // Refusing to encode (a value the protocol cannot carry) is allowed; panicking is not.
    protocol.encode(message, &mut encoded).ok()?;
    let mut decoder = protocol.decoder(encoded.len() + 16);
    decoder
        .feed(&encoded)
        .unwrap_or_else(|e| panic!("{protocol}: own encoding of {message:?} refused: {e}"));
    let decoded = decoder
        .next_message()
        .unwrap_or_else(|| panic!("{protocol}: own encoding of {message:?} incomplete"))
        .unwrap_or_else(|e| panic!("{protocol}: own encoding of {message:?} invalid: {e}"));
    assert!(
        decoder.next_message().is_none(),
        "{protocol}: one message in, one out"
    );
    assert_eq!(
        protocol.message_type_of(&encoded),
        Some(decoded.message_type()),
        "{protocol}: peeked type"
    );
    Some((decoded, encoded))
}
