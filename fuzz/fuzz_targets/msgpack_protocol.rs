//! The MessagePack hub protocol, typed values (bin, timestamp, other ext) included: length
//! prefixes and bodies cut into arbitrary frames. Whatever decodes must survive a MessagePack
//! round trip unchanged (bin and timestamps stay bin and timestamps) and encode as JSON or be
//! refused cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::protocol::{msgpack, typed, HubMessage, HubProtocol};

#[path = "common.rs"]
mod common;

fn check_typed(value: &serde_json::Value) {
    // Every typed value the reader produced has a JSON text.
    let _ = typed::typed(value);
    let _ = serde_json::to_vec(&typed::JsonPayload(value));
}

fuzz_target!(|data: &[u8]| {
    let _ = HubProtocol::MessagePack.message_type_of(data);
    let _ = msgpack::read_length_prefix(data);
    // A body without its prefix, as the decoder hands it over.
    let _ = msgpack::parse_message(data.get(1..).unwrap_or_default());
    for message in common::decode_all(HubProtocol::MessagePack, &common::frames(data)) {
        if let HubMessage::Invocation { arguments, .. } = &message {
            arguments.iter().for_each(check_typed);
        }
        if let Some((once, _)) = common::reencode(HubProtocol::MessagePack, &message) {
            assert_eq!(message, once, "MessagePack round trip changed the message");
        }
        let _ = common::reencode(HubProtocol::Json, &message);
    }
});
