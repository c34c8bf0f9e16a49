//! Micro-benchmarks of the per-message and per-connection work on Signet's hot paths:
//! token verification (every negotiate), envelope verification with the nonce store and the
//! nonce store alone (every signed call), and the JSON and MessagePack codecs (every message).
//!
//! `cargo bench` runs them all; `cargo bench -- envelope` runs one group. See BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_util::future::{BoxFuture, FutureExt};
use serde_json::{json, Value};
use signet::auth::KeyRing;
use signet::protocol::{CompletionResult, HubMessage, HubProtocol, SerializedHubMessage};
use signet::settings::{self, ResolvedSecrets};
use signet_protocol::envelope::{
    derive_message_key, unix_now_ms, EnvelopeBuilder, EnvelopeLimits, EnvelopeVerifier,
    InMemoryNonceStore, NonceStore, NonceStoreError,
};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const JWT_SECRET: &str = "bench-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
const ENVELOPE_SECRET: &str = "bench-envelope-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
const HUB_PATH: &str = "/hubs/home";

fn keyring() -> KeyRing {
    let env = [
        ("SIGNET__JWT__SECRET", JWT_SECRET),
        ("SIGNET__ENVELOPE__SECRET", ENVELOPE_SECRET),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let settings = settings::load_from_str("", Path::new("bench"), env).expect("settings");
    let secrets = ResolvedSecrets::inspect(&settings).expect("secrets");
    KeyRing::new(&settings.jwt, &secrets).expect("key ring")
}

fn jwt(c: &mut Criterion) {
    let ring = keyring();
    let claims = ring.claims("bench-user", vec!["user".into()], Duration::from_secs(900));
    let token = ring.issue(&claims).expect("token").token;
    let mut group = c.benchmark_group("jwt");
    group.bench_function("verify_hs256", |b| {
        b.iter(|| ring.verify(black_box(&token)).expect("valid"))
    });
    group.bench_function("sign_hs256", |b| {
        b.iter(|| ring.sign(black_box(&claims)).expect("signs"))
    });
    group.finish();
}

/// A store that accepts every nonce: isolates the checks before the nonce store.
struct AcceptAll;

impl NonceStore for AcceptAll {
    fn insert_if_absent<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: u64,
    ) -> BoxFuture<'a, Result<bool, NonceStoreError>> {
        Box::pin(std::future::ready(Ok(true)))
    }
}

fn envelope(c: &mut Criterion) {
    let session = "bench-session";
    let key = derive_message_key(ENVELOPE_SECRET.as_bytes(), session);
    let message = r#"{"seq":42,"text":"hello"}"#;
    // Short-lived envelopes, so the store forgets their nonces while the benchmark runs; they are
    // built in batches of 1,000 just before use, so none expires before it is verified.
    let builder =
        EnvelopeBuilder::new(&key, HUB_PATH, "EchoSigned").lifetime(Duration::from_secs(5));
    let limits = EnvelopeLimits::default();
    let with_store = EnvelopeVerifier::new(limits, Arc::new(InMemoryNonceStore::new(50_000_000)));
    let without_store = EnvelopeVerifier::new(limits, Arc::new(AcceptAll));

    let mut group = c.benchmark_group("envelope");
    group.bench_function("derive_message_key", |b| {
        b.iter(|| derive_message_key(black_box(ENVELOPE_SECRET.as_bytes()), black_box(session)))
    });
    group.bench_function("sign", |b| b.iter(|| builder.build(black_box(message))));
    for (name, verifier) in [
        ("verify_without_nonce_store", &without_store),
        ("verify_with_nonce_store", &with_store),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || builder.build(message),
                |envelope| {
                    verifier
                        .verify(
                            &envelope,
                            &key,
                            HUB_PATH,
                            "EchoSigned",
                            session,
                            unix_now_ms(),
                        )
                        .now_or_never()
                        .expect("the in-memory store never waits")
                        .map(|verified| verified.into_command())
                        .expect("valid envelope")
                },
                BatchSize::NumIterations(1000),
            )
        });
    }
    group.finish();
}

/// The in-memory nonce store alone: a fresh nonce recorded (what every accepted envelope costs),
/// and a replay refused. 1,000 sessions, nonces kept 200 ms, so the store holds a steady few
/// hundred thousand and each insert also pays its share of dropping expired ones.
fn nonce_store(c: &mut Criterion) {
    let store = InMemoryNonceStore::new(50_000_000);
    let scopes: Vec<String> = (0..1_000).map(|i| format!("session-{i:04}")).collect();
    let mut counter = 0u64;
    let mut group = c.benchmark_group("nonce");
    group.bench_function("insert_fresh", |b| {
        b.iter_batched(
            || {
                counter += 1;
                let scope = &scopes[(counter % 1_000) as usize];
                (
                    scope,
                    format!("nonce-{counter:016x}-abcdefghij"),
                    unix_now_ms() + 200,
                )
            },
            |(scope, nonce, until)| {
                let fresh = store
                    .insert_if_absent_now(scope, &nonce, until)
                    .expect("room");
                assert!(fresh);
            },
            BatchSize::SmallInput,
        )
    });
    let until = unix_now_ms() + 600_000;
    store
        .insert_if_absent_now("replayer", "the-nonce", until)
        .expect("room");
    group.bench_function("replay_refused", |b| {
        b.iter(|| {
            let fresh = store
                .insert_if_absent_now(black_box("replayer"), black_box("the-nonce"), until)
                .expect("answered");
            assert!(!fresh);
        })
    });
    group.finish();
}

/// A typical call: an invocation with a small object argument.
fn invocation() -> HubMessage {
    HubMessage::Invocation {
        headers: Default::default(),
        invocation_id: Some("42".into()),
        target: "Echo".into(),
        arguments: vec![json!({"seq": 42, "text": "hello", "flags": [1, 2, 3], "ok": true})],
        stream_ids: Vec::new(),
    }
}

fn completion() -> HubMessage {
    HubMessage::completion(
        "42",
        CompletionResult::Result(
            json!({"seq": 42, "text": "hello", "flags": [1, 2, 3], "ok": true}),
        ),
    )
}

fn codecs(c: &mut Criterion) {
    let messages: [(&str, HubMessage); 2] =
        [("invocation", invocation()), ("completion", completion())];
    for protocol in HubProtocol::ALL {
        let mut group = c.benchmark_group(format!("protocol/{}", protocol.name()));
        group.throughput(Throughput::Elements(1));
        for (name, message) in &messages {
            let bytes = protocol.encode_to_bytes(message).expect("encodes");
            let mut out = Vec::with_capacity(256);
            group.bench_function(format!("encode_{name}"), |b| {
                b.iter(|| {
                    out.clear();
                    protocol
                        .encode(black_box(message), &mut out)
                        .expect("encodes");
                })
            });
            let mut decoder = protocol.decoder(32 * 1024);
            group.bench_function(format!("parse_{name}"), |b| {
                b.iter(|| {
                    decoder.feed(black_box(&bytes)).expect("feeds");
                    decoder.next_message().expect("one message").expect("valid")
                })
            });
        }
        group.finish();
    }

    // A broadcast: one message encoded once per protocol, then shared by every recipient.
    let text = Value::String("1700000000000000 42 maintenance at noon".into());
    let mut group = c.benchmark_group("broadcast");
    group.bench_function("serialize_once_both_protocols", |b| {
        b.iter(|| {
            let shared = SerializedHubMessage::new(HubMessage::invocation(
                "SystemMessage",
                vec![text.clone()],
            ));
            let json = shared.bytes(HubProtocol::Json).expect("json");
            let msgpack = shared.bytes(HubProtocol::MessagePack).expect("msgpack");
            (json, msgpack)
        })
    });
    let shared = SerializedHubMessage::new(HubMessage::invocation("SystemMessage", vec![text]));
    let _ = shared.bytes(HubProtocol::Json);
    group.bench_function("cached_bytes_per_recipient", |b| {
        b.iter(|| shared.bytes(black_box(HubProtocol::Json)).expect("cached"))
    });
    group.finish();
}

criterion_group!(benches, jwt, envelope, nonce_store, codecs);
criterion_main!(benches);
