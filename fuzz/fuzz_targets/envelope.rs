//! Signed envelopes: parsing and the verifier's ordered checks on arbitrary JSON, then the same
//! envelope correctly re-signed, which must get past the signature check, verify at most once
//! (the nonce), and never verify for another method.
#![no_main]

use futures_util::FutureExt as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use signet_protocol::envelope::{
    sign, unix_now_ms, Envelope, EnvelopeError, EnvelopeLimits, EnvelopeVerifier,
    InMemoryNonceStore, MessageKey,
};
use std::sync::Arc;

/// The message key of the test vectors (`tests/vectors/envelope.json`), whose envelopes seed
/// the corpus.
const MESSAGE_KEY: &str = "7l88xm_VuGwtP01MMssxtLcKMD_zWMy8gMLeeX-DGxI";
const HUB_PATH: &str = "/hubs/home";
const TARGET: &str = "SendCommand";
/// Just after the vectors' `issuedAt`, so their time window is open for the first check.
const NOW_MS: u64 = 1_700_000_001_000;

fn verify(
    verifier: &EnvelopeVerifier,
    envelope: &Value,
    key: &MessageKey,
    target: &str,
    now_ms: u64,
) -> Result<(), EnvelopeError> {
    verifier
        .verify(envelope, key, HUB_PATH, target, "fuzz-session", now_ms)
        // The in-memory store never awaits.
        .now_or_never()
        .expect("verification completes without awaiting")
        .map(|verified| {
            let _ = (verified.message(), verified.command(), verified.nonce());
        })
}

fn verifier() -> EnvelopeVerifier {
    EnvelopeVerifier::new(
        EnvelopeLimits::default(),
        Arc::new(InMemoryNonceStore::new(64)),
    )
}

fuzz_target!(|data: &[u8]| {
    let key = MessageKey::from_base64url(MESSAGE_KEY).expect("vector key");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = MessageKey::from_base64url(text);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Err(error) = verify(&verifier(), &value, &key, TARGET, NOW_MS) {
        let _ = (error.code(), error.to_string());
    }

    let Ok(parsed) = Envelope::parse(&value) else {
        return;
    };
    // Re-signed at the real time (the nonce store keeps nonces by the system clock), with the
    // input's lifetime.
    let now = unix_now_ms();
    let expiry = if parsed.expiry >= parsed.issued_at {
        now.saturating_add(parsed.expiry - parsed.issued_at)
    } else {
        now.saturating_sub(parsed.issued_at - parsed.expiry)
    };
    let signature = sign(
        &key,
        HUB_PATH,
        TARGET,
        now,
        expiry,
        parsed.nonce,
        parsed.message,
    );
    let mut resigned = value.clone();
    resigned["issuedAt"] = Value::from(now);
    resigned["expiry"] = Value::from(expiry);
    resigned["signature"] = Value::String(signature);
    let verifier = verifier();
    match verify(&verifier, &resigned, &key, TARGET, now) {
        Ok(()) => {
            assert!(
                matches!(
                    verify(&verifier, &resigned, &key, TARGET, now),
                    Err(EnvelopeError::ReplayedNonce)
                ),
                "a verified envelope verified twice"
            );
            assert!(
                matches!(
                    verify(&self::verifier(), &resigned, &key, "OtherMethod", now),
                    Err(EnvelopeError::BadSignature)
                ),
                "an envelope verified for a method it was not signed for"
            );
        }
        Err(EnvelopeError::BadSignature) => panic!("a correctly signed envelope was refused"),
        Err(_) => {}
    }
});
