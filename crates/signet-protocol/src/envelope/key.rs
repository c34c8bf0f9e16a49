//! Per-session message keys.
//!
//! Each login session gets its own signing key so that a key leaked from one browser tab or device
//! cannot sign commands for any other session, and so that revoking a session retires its key.
//! The key is derived rather than stored: the server recomputes it from the master key and the
//! session id whenever it needs it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Domain separation for key derivation, so a message key can never equal a MAC the server
/// computes with the same master key for another purpose.
const DERIVATION_LABEL: &[u8] = b"signet-msgkey-v1:";

/// Length of a message key in bytes (one HMAC-SHA256 output).
pub const MESSAGE_KEY_LEN: usize = 32;

/// Base64url text length of a 32-byte key without padding.
const MESSAGE_KEY_TEXT_LEN: usize = 43;

/// The HMAC-SHA256 key a session signs its envelopes with.
///
/// Holds the keyed MAC state as well as the raw bytes: cloning a prepared state is cheaper than
/// re-running the HMAC key schedule for every envelope.
#[derive(Clone)]
pub struct MessageKey {
    bytes: [u8; MESSAGE_KEY_LEN],
    mac: HmacSha256,
}

/// Why a transmitted message key could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageKeyError {
    #[error("message key is not base64url without padding")]
    Encoding,
    #[error("message key must decode to exactly {MESSAGE_KEY_LEN} bytes")]
    Length,
}

impl MessageKey {
    pub fn from_bytes(bytes: [u8; MESSAGE_KEY_LEN]) -> Self {
        let mac = keyed_mac(&bytes);
        Self { bytes, mac }
    }

    /// Decodes the form a client receives: base64url, no padding, 32 bytes.
    pub fn from_base64url(text: &str) -> Result<Self, MessageKeyError> {
        if text.len() != MESSAGE_KEY_TEXT_LEN {
            return Err(MessageKeyError::Length);
        }
        let mut bytes = [0u8; MESSAGE_KEY_LEN];
        let written = URL_SAFE_NO_PAD
            .decode_slice(text, &mut bytes)
            .map_err(|_| MessageKeyError::Encoding)?;
        if written != MESSAGE_KEY_LEN {
            return Err(MessageKeyError::Length);
        }
        Ok(Self::from_bytes(bytes))
    }

    /// The form handed to the client at login: base64url without padding.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.bytes)
    }

    pub fn as_bytes(&self) -> &[u8; MESSAGE_KEY_LEN] {
        &self.bytes
    }

    /// A fresh MAC keyed with this key, ready to be fed a signing input.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }
}

impl fmt::Debug for MessageKey {
    // A key in a log line is a key handed to whoever reads the logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey(<redacted>)")
    }
}

/// Derives the message key of one login session:
/// `HMAC-SHA256(master, "signet-msgkey-v1:" + session_id)`.
///
/// `session_id` is the token's `sid`, or its `jti` when it has no `sid`. The master key should be
/// at least 32 random bytes; that is for the settings to enforce, not this function.
pub fn derive_message_key(master: &[u8], session_id: &str) -> MessageKey {
    let mut mac = keyed_mac(master);
    mac.update(DERIVATION_LABEL);
    mac.update(session_id.as_bytes());
    MessageKey::from_bytes(mac.finalize().into_bytes().into())
}

pub(crate) fn keyed_mac(key: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of every length (RFC 2104 hashes long ones, pads short ones), so
    // this cannot fail; the key is server configuration or a fixed-size array, never client input.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trip_keeps_the_key() {
        let key = derive_message_key(b"master", "session-1");
        let text = key.to_base64url();
        assert_eq!(text.len(), MESSAGE_KEY_TEXT_LEN);
        let decoded = MessageKey::from_base64url(&text).unwrap();
        assert_eq!(decoded.as_bytes(), key.as_bytes());
    }

    #[test]
    fn different_sessions_get_different_keys() {
        let a = derive_message_key(b"master", "session-1");
        let b = derive_message_key(b"master", "session-2");
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn derivation_is_hmac_of_label_and_session() {
        let mut mac = keyed_mac(b"master");
        mac.update(b"signet-msgkey-v1:session-1");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(
            derive_message_key(b"master", "session-1").as_bytes(),
            &expected
        );
    }

    #[test]
    fn rejects_padded_short_and_invalid_text() {
        let text = derive_message_key(b"m", "s").to_base64url();
        assert_eq!(
            MessageKey::from_base64url(&format!("{text}=")).unwrap_err(),
            MessageKeyError::Length
        );
        assert_eq!(
            MessageKey::from_base64url(&text[..42]).unwrap_err(),
            MessageKeyError::Length
        );
        let invalid = format!("{}+", &text[..42]);
        assert_eq!(
            MessageKey::from_base64url(&invalid).unwrap_err(),
            MessageKeyError::Encoding
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = derive_message_key(b"master", "s");
        assert_eq!(format!("{key:?}"), "MessageKey(<redacted>)");
    }
}
