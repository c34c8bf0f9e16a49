//! Property tests (proptest) of the codecs and the envelope's canonical form: whatever the
//! encoders write, the decoders read back unchanged, however the bytes are cut into frames.
//! The fuzz targets in `fuzz/` explore the hostile side (arbitrary bytes); these pin the
//! honest side in the normal suite. See docs/fuzzing.md.

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use signet::protocol::{
    handshake, typed, CompletionResult, HandshakeDecoder, Headers, HubMessage, HubProtocol,
};
use signet_protocol::envelope::{
    derive_message_key, unix_now_ms, Envelope, EnvelopeBuilder, EnvelopeError, EnvelopeLimits,
    EnvelopeVerifier, InMemoryNonceStore, MessageKey, SigningInput,
};
use std::sync::Arc;
use std::time::Duration;

/// Any JSON value a client could send (object keys never take the reserved typed-value form).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            hash_map("[a-zA-Z0-9 _é]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Values as a MessagePack client may also send them: bin and timestamps besides JSON.
fn msgpack_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => json_value(),
        1 => vec(any::<u8>(), 0..40).prop_map(|bytes| typed::binary(&bytes)),
        1 => (-62_167_219_200i64..253_402_300_800, 0u32..1_000_000_000)
            .prop_filter_map("ISO 8601 year", |(s, n)| typed::timestamp(s, n)),
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    hash_map(".{0,6}", ".{0,6}", 0..3).prop_map(|m| m.into_iter().collect())
}

/// Invocation and stream ids. Never empty: the decoders read an empty id as a missing one (a
/// Completion without an id answers nothing), and the server only echoes ids it decoded.
fn id() -> impl Strategy<Value = String> {
    ".{1,8}"
}

fn hub_message(value: BoxedStrategy<Value>) -> impl Strategy<Value = HubMessage> {
    let args = vec(value.clone(), 0..4);
    prop_oneof![
        (
            headers(),
            proptest::option::of(id()),
            id(),
            args.clone(),
            vec(id(), 0..2)
        )
            .prop_map(|(headers, invocation_id, target, arguments, stream_ids)| {
                HubMessage::Invocation {
                    headers,
                    invocation_id,
                    target,
                    arguments,
                    stream_ids,
                }
            }),
        (headers(), id(), id(), args, vec(id(), 0..2)).prop_map(
            |(headers, invocation_id, target, arguments, stream_ids)| {
                HubMessage::StreamInvocation {
                    headers,
                    invocation_id,
                    target,
                    arguments,
                    stream_ids,
                }
            }
        ),
        (headers(), id(), value.clone()).prop_map(|(headers, invocation_id, item)| {
            HubMessage::StreamItem {
                headers,
                invocation_id,
                item,
            }
        }),
        (
            headers(),
            id(),
            prop_oneof![
                Just(CompletionResult::Void),
                value.prop_map(CompletionResult::Result),
                ".{0,10}".prop_map(CompletionResult::Error),
            ]
        )
            .prop_map(|(headers, invocation_id, result)| HubMessage::Completion {
                headers,
                invocation_id,
                result,
            }),
        (headers(), id()).prop_map(|(headers, invocation_id)| HubMessage::CancelInvocation {
            headers,
            invocation_id,
        }),
        Just(HubMessage::Ping),
        (proptest::option::of(".{0,10}"), any::<bool>()).prop_map(|(error, allow_reconnect)| {
            HubMessage::Close {
                error,
                allow_reconnect,
            }
        }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Ack { sequence_id }),
        any::<u64>().prop_map(|sequence_id| HubMessage::Sequence { sequence_id }),
    ]
}

/// Encodes `messages`, feeds the bytes in frames of `cut` bytes and decodes them all.
fn round_trip(protocol: HubProtocol, messages: &[HubMessage], cut: usize) -> Vec<HubMessage> {
    let mut bytes = Vec::new();
    for message in messages {
        protocol.encode(message, &mut bytes).expect("encodes");
    }
    let mut decoder = protocol.decoder(bytes.len().max(1));
    let mut decoded = Vec::new();
    for frame in bytes.chunks(cut) {
        decoder.feed(frame).expect("own frames are accepted");
        while let Some(message) = decoder.next_message() {
            decoded.push(message.expect("own messages decode"));
        }
    }
    decoded
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_messages_round_trip(
        messages in vec(hub_message(json_value().boxed()), 1..4),
        cut in 1usize..64,
    ) {
        prop_assert_eq!(round_trip(HubProtocol::Json, &messages, cut), messages);
    }

    #[test]
    fn msgpack_messages_round_trip(
        messages in vec(hub_message(msgpack_value().boxed()), 1..4),
        cut in 1usize..64,
    ) {
        prop_assert_eq!(round_trip(HubProtocol::MessagePack, &messages, cut), messages);
    }

    /// A value written for JSON clients (typed values as text) reads back as what a JSON
    /// client would then send, and that one is stable.
    #[test]
    fn msgpack_values_reach_json_clients_stably(value in msgpack_value()) {
        let message = HubMessage::invocation("T", vec![value]);
        let once = round_trip(HubProtocol::Json, std::slice::from_ref(&message), 64);
        let twice = round_trip(HubProtocol::Json, &once, 64);
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn handshake_requests_decode_however_cut(
        json in any::<bool>(),
        version in 0i32..=HubProtocol::VERSION,
        cut in 1usize..40,
    ) {
        let protocol = if json { HubProtocol::Json } else { HubProtocol::MessagePack };
        let mut bytes = Vec::new();
        handshake::encode_request(protocol, version, &mut bytes);
        protocol.encode(&HubMessage::Ping, &mut bytes).expect("ping");
        let mut decoder = HandshakeDecoder::new(1024);
        let mut result = None;
        let mut after = Vec::new();
        for frame in bytes.chunks(cut) {
            match &result {
                None => result = decoder.feed(frame).expect("valid request"),
                Some(_) => after.extend_from_slice(frame),
            }
        }
        let handshake = result.expect("complete");
        prop_assert_eq!(handshake.protocol, protocol);
        prop_assert_eq!(handshake.version, version);
        let mut remaining = handshake.remaining.clone();
        remaining.extend_from_slice(&after);
        prop_assert_eq!(remaining, protocol.ping_frame());
    }

    /// The canonical form: the joined signing input is the documented text, a built envelope
    /// verifies exactly once, and it verifies for no other hub, method or key.
    #[test]
    fn envelopes_verify_only_as_signed(
        message in json_value(),
        session in "[a-z0-9]{1,12}",
        lifetime_ms in 1u64..=60_000,
    ) {
        let message = message.to_string();
        let key = derive_message_key(b"property master key", &session);
        // The system clock: the in-memory nonce store keeps nonces by it.
        let now = unix_now_ms();
        let envelope = EnvelopeBuilder::new(&key, "/hubs/home", "SendCommand")
            .issued_at(now)
            .lifetime(Duration::from_millis(lifetime_ms))
            .build(&message);
        let parsed = Envelope::parse(&envelope).expect("parses");
        prop_assert_eq!(parsed.message, message.as_str());
        prop_assert_eq!(parsed.expiry - parsed.issued_at, lifetime_ms);
        let mut joined = Vec::new();
        parsed.signing_input("/hubs/home", "SendCommand").write_to(&mut joined);
        let expected = format!(
            "signet-envelope-v1\n/hubs/home\nSendCommand\n{now}\n{}\n{}\n{message}",
            now + lifetime_ms,
            parsed.nonce
        );
        prop_assert_eq!(joined, expected.into_bytes());

        let verifier = EnvelopeVerifier::new(
            EnvelopeLimits::default(),
            Arc::new(InMemoryNonceStore::new(16)),
        );
        let verify = |key: &MessageKey, hub: &str, target: &str| {
            futures_executor(verifier.verify(&envelope, key, hub, target, &session, now))
                .map(|_| ())
        };
        let other_key = derive_message_key(b"property master key", &format!("{session}x"));
        prop_assert!(matches!(verify(&key, "/hubs/other", "SendCommand"), Err(EnvelopeError::BadSignature)));
        prop_assert!(matches!(verify(&key, "/hubs/home", "SendCommandX"), Err(EnvelopeError::BadSignature)));
        prop_assert!(matches!(verify(&other_key, "/hubs/home", "SendCommand"), Err(EnvelopeError::BadSignature)));
        prop_assert!(verify(&key, "/hubs/home", "SendCommand").is_ok());
        prop_assert!(matches!(verify(&key, "/hubs/home", "SendCommand"), Err(EnvelopeError::ReplayedNonce)));
        let input = SigningInput { hub_path: "/hubs/home", target: "SendCommand", ..parsed.signing_input("", "") };
        prop_assert!(input.verify(&key, &parsed.signature));
    }
}

/// Runs a future that never waits (the in-memory nonce store does its work inline).
fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the in-memory nonce store does not wait"),
    }
}

/// The fuzz targets' own checks, shared so a fuzz finding replays here.
#[path = "../fuzz/fuzz_targets/common.rs"]
mod fuzz_common;

/// Inputs the fuzzers flagged (`fuzz/regressions/<target>/`), replayed through the same
/// decode, re-encode and decode again checks in the normal suite.
#[test]
fn fuzz_findings_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, protocol) in [
        ("json_protocol", HubProtocol::Json),
        ("msgpack_protocol", HubProtocol::MessagePack),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            for message in fuzz_common::decode_all(protocol, &fuzz_common::frames(&data)) {
                if let Some((once, _)) = fuzz_common::reencode(protocol, &message) {
                    let (twice, _) = fuzz_common::reencode(protocol, &once).expect("encodes again");
                    assert_eq!(once, twice, "{target}");
                }
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the recorded findings are present");
}
