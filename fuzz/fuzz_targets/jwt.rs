//! Access tokens: the key ring's header and claims path. The input is tried as a token as it
//! is, and split at the first `\n` into a header and a claims document that are encoded and
//! signed with the ring's own key, so the claim checks behind the signature are reached.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use signet::auth::KeyRing;
use signet::settings::{self, ResolvedSecrets};
use std::path::Path;
use std::sync::OnceLock;

const JWT_SECRET: &str = "fuzz-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let env = [
            ("SIGNET__JWT__SECRET", JWT_SECRET),
            (
                "SIGNET__ENVELOPE__SECRET",
                "fuzz-envelope-secret-0123456789-abcdefghijkl",
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let settings = settings::load_from_str("", Path::new("fuzz"), env).expect("settings");
        let secrets = ResolvedSecrets::inspect(&settings).expect("secrets");
        KeyRing::new(&settings.jwt, &secrets).expect("key ring")
    })
}

fn check(token: &str) {
    let ring = ring();
    if let Err(error) = ring.verify(token) {
        let _ = error.code();
    }
    let _ = ring.verify_past_expiry(token);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    let Some((header, claims)) = text.split_once('\n') else {
        return;
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    check(&format!("{signing_input}.{signature}"));
});
