//! The handshake request, server side, and the handshake response, client side, each fed in
//! arbitrary frames. The server decoder is tried with each protocol set and transport kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::protocol::{HandshakeDecoder, HandshakeResponseDecoder, HubProtocol};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let frames = common::frames(data);
    let variant = data.first().copied().unwrap_or(0);
    let protocols: &[HubProtocol] = match variant % 3 {
        0 => &HubProtocol::ALL,
        1 => &[HubProtocol::Json],
        _ => &[HubProtocol::MessagePack],
    };
    let mut server = HandshakeDecoder::new(common::MAX_MESSAGE_SIZE).with_protocols(protocols);
    if variant & 0x80 != 0 {
        server = server.text_only_transport();
    }
    for frame in &frames {
        match server.feed(frame) {
            Ok(None) => continue,
            Ok(Some(handshake)) => {
                assert!(protocols.contains(&handshake.protocol));
                assert!(handshake.protocol.is_version_supported(handshake.version));
                // What followed the request goes to the hub protocol decoder.
                let mut decoder = handshake.protocol.decoder(common::MAX_MESSAGE_SIZE);
                if decoder.feed(&handshake.remaining).is_ok() {
                    while let Some(Ok(_)) = decoder.next_message() {}
                }
                break;
            }
            Err(error) => {
                let _ = error.response_text(true);
                let _ = error.response_text(false);
                break;
            }
        }
    }

    let mut client = HandshakeResponseDecoder::new(common::MAX_MESSAGE_SIZE);
    for frame in &frames {
        match client.feed(frame) {
            Ok(None) => continue,
            _ => break,
        }
    }
});
