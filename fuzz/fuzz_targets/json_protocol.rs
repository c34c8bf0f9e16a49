//! The JSON hub protocol: records cut into arbitrary frames. Whatever decodes must re-encode,
//! and after one round trip (which turns typed values into their JSON text) the message is stable.
//! Every decoded message must also encode as MessagePack or be refused cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::protocol::HubProtocol;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = HubProtocol::Json.message_type_of(data);
    for message in common::decode_all(HubProtocol::Json, &common::frames(data)) {
        if let Some((once, _)) = common::reencode(HubProtocol::Json, &message) {
            // Messages, not bytes: headers are a map, written in no particular order.
            let (twice, _) = common::reencode(HubProtocol::Json, &once)
                .expect("a decoded message encodes again");
            assert_eq!(once, twice, "JSON round trip is not stable");
        }
        let _ = common::reencode(HubProtocol::MessagePack, &message);
    }
});
