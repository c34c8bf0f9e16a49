//! Writes the seed corpora of the fuzz targets (`fuzz/`, see docs/fuzzing.md) from the test
//! vectors and the codecs themselves, so no binary corpus needs to be committed.
//!
//! `cargo run --example fuzz_seeds [-- <dir>]` writes `<dir>/<target>/seed-<n>` (default
//! `fuzz/corpus`); `scripts/fuzz.sh` runs it before fuzzing.

use serde_json::{json, Value};
use signet::protocol::{handshake, typed, CompletionResult, Headers, HubMessage, HubProtocol};
use std::path::{Path, PathBuf};

const ENVELOPE_VECTORS: &str = include_str!("../tests/vectors/envelope.json");
const CONFIG: &str = include_str!("../config.toml");

fn messages() -> Vec<HubMessage> {
    let headers: Headers = [("trace".to_string(), "abc".to_string())]
        .into_iter()
        .collect();
    vec![
        HubMessage::invocation("Echo", vec![json!({"k": [1, "v", null, true, 1.5]})]),
        HubMessage::Invocation {
            headers: headers.clone(),
            invocation_id: Some("1".into()),
            target: "SendCommand".into(),
            arguments: vec![json!("x"), json!(-7), json!(18_446_744_073_709_551_615u64)],
            stream_ids: vec!["s1".into()],
        },
        HubMessage::invocation(
            "Data",
            vec![
                typed::binary(&[0, 1, 2, 255]),
                typed::timestamp(1_704_164_645, 678_000_000).unwrap_or(Value::Null),
                typed::timestamp(-1, 999_999_999).unwrap_or(Value::Null),
                typed::timestamp(17_179_869_184, 1).unwrap_or(Value::Null),
            ],
        ),
        HubMessage::StreamInvocation {
            headers: Headers::new(),
            invocation_id: "2".into(),
            target: "Counter".into(),
            arguments: vec![json!(3), json!(0.25)],
            stream_ids: Vec::new(),
        },
        HubMessage::stream_item("2", json!({"n": 1})),
        HubMessage::completion("1", CompletionResult::Void),
        HubMessage::completion("1", CompletionResult::Result(json!([1, 2]))),
        HubMessage::completion("1", CompletionResult::Error("boom".into())),
        HubMessage::CancelInvocation {
            headers,
            invocation_id: "2".into(),
        },
        HubMessage::Ping,
        HubMessage::close(Some("bye".into()), true),
        HubMessage::close(None, false),
        HubMessage::Ack { sequence_id: 3 },
        HubMessage::Sequence {
            sequence_id: 1 << 40,
        },
    ]
}

/// Frame seeds for the protocol targets: a first byte of 0 delivers the rest as one frame.
fn protocol_seeds(protocol: HubProtocol) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let mut all = vec![0];
    for message in messages() {
        let mut seed = vec![0];
        if protocol.encode(&message, &mut seed).is_ok() {
            all.extend_from_slice(&seed[1..]);
            seeds.push(seed);
        }
    }
    // Every message in one input, cut into frames of varying length.
    all[0] = 7;
    seeds.push(all);
    seeds
}

fn handshake_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (variant, protocol) in [(0u8, HubProtocol::Json), (0x80, HubProtocol::MessagePack)] {
        for version in [0, 1, 2, 3] {
            let mut seed = vec![variant];
            handshake::encode_request(protocol, version, &mut seed);
            protocol.encode(&HubMessage::Ping, &mut seed).ok();
            seeds.push(seed);
        }
    }
    seeds.push(b"\x05{\"protocol\":\"json\",\"version\":1,\"extra\":[1]}\x1e".to_vec());
    let mut response = vec![0];
    handshake::encode_response(Some("Handshake was canceled."), &mut response);
    seeds.push(response);
    seeds
}

fn envelope_seeds() -> Vec<Vec<u8>> {
    let vectors: Value = serde_json::from_str(ENVELOPE_VECTORS).expect("envelope vectors");
    let mut seeds = Vec::new();
    for list in ["envelopes", "verifications"] {
        for case in vectors[list].as_array().into_iter().flatten() {
            if let Some(envelope) = case.get("envelope") {
                seeds.push(serde_json::to_vec(envelope).expect("JSON"));
            }
        }
    }
    seeds
}

fn jwt_seeds() -> Vec<Vec<u8>> {
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = r#"{"sub":"alice","iss":"signet","aud":"signet","exp":4102444800,"iat":1700000000,"nbf":1700000000,"jti":"j1","sid":"s1","roles":["user","admin"],"http://schemas.microsoft.com/ws/2008/06/identity/claims/role":"device"}"#;
    vec![
        format!("{header}\n{claims}").into_bytes(),
        format!("{{\"alg\":\"HS256\",\"kid\":\"hs-0\"}}\n{claims}").into_bytes(),
        format!("{{\"alg\":\"none\"}}\n{claims}").into_bytes(),
        b"{\"alg\":\"RS256\",\"jwk\":{\"kty\":\"oct\"}}\n{\"exp\":1}".to_vec(),
        b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".to_vec(),
    ]
}

fn negotiate_seeds() -> Vec<Vec<u8>> {
    [
        "negotiateVersion=1&access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
        "id=abc123&access%5Ftoken=tok&useStatefulReconnect=true",
        "%69d=conn&%2561ccess_token=x&Access-Token=y&negotiateVersion=99999999999",
        "a=%zz&&=&id&id=%F0%9F%98%80+x\0x-forwarded-for: 10.0.0.1, 203.0.113.9\nforwarded: for=\"[2001:db8::1]:443\";proto=https, for=198.51.100.7",
        "\0x-forwarded-for: unknown\nforwarded: for=_hidden;by=127.0.0.1",
    ]
    .into_iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn settings_seeds() -> Vec<Vec<u8>> {
    vec![
        CONFIG.as_bytes().to_vec(),
        b"[server]\nlisten = \"[::1]:0\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\0JWT__LEEWAY_SECS=5\nHUB__MAX_MESSAGE_BYTES=1".to_vec(),
        b"[jwt]\nalgorithm = \"HS512\"\n[[jwt.external]]\nissuer = \"x\"\naudience = \"y\"\n".to_vec(),
        b"\0SERVER__LISTEN=nonsense\nENVELOPE__MAX_LIFETIME_SECS=-1".to_vec(),
    ]
}

fn write(dir: &Path, target: &str, seeds: Vec<Vec<u8>>) -> std::io::Result<usize> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    for (n, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{n}")), seed)?;
    }
    Ok(seeds.len())
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    let corpora = [
        ("json_protocol", protocol_seeds(HubProtocol::Json)),
        ("msgpack_protocol", protocol_seeds(HubProtocol::MessagePack)),
        ("handshake", handshake_seeds()),
        ("envelope", envelope_seeds()),
        ("jwt", jwt_seeds()),
        ("negotiate_query", negotiate_seeds()),
        ("settings", settings_seeds()),
    ];
    for (target, seeds) in corpora {
        let count = write(&dir, target, seeds)?;
        println!("{target}: {count} seeds in {}", dir.join(target).display());
    }
    Ok(())
}
