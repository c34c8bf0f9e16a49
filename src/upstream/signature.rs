//! How a request to a backend is signed, so the backend can tell it came from Signet and is
//! recent: `X-Signet-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>` beside
//! `X-Signet-Timestamp: <unix seconds>`.

use crate::settings::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "x-signet-timestamp";
pub const SIGNATURE_HEADER: &str = "x-signet-signature";

/// The `X-Signet-Signature` value of `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; an error here would be a bug in the hmac crate.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose()) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_documented_recipe() {
        // Python: hmac.new(b"k" * 32, b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        let secret = Secret::new(vec![b'k'; 32]);
        assert_eq!(
            sign(&secret, 1_700_000_000, br#"{"a":1}"#),
            "v1=6935b796c0fec66e5dee52c86c7fd1218a424c32f1adb239ff2893c31e54f033"
        );
    }

    #[test]
    fn the_timestamp_and_the_body_are_both_signed() {
        let secret = Secret::new(vec![b'k'; 32]);
        let signed = sign(&secret, 1_700_000_000, b"{}");
        assert_ne!(signed, sign(&secret, 1_700_000_001, b"{}"));
        assert_ne!(signed, sign(&secret, 1_700_000_000, b"{ }"));
    }
}
