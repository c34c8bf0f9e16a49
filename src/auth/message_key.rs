//! The message key a client signs envelopes with: derived from the envelope master key and the
//! token's session, recomputed by the server on demand and never stored.
//!
//! `messageKey = base64url_nopad(HMAC-SHA256(master, "signet-msgkey-v1:" + sid))`, with the
//! token's `jti` in place of `sid` when it has none (tokens of external issuers).

use super::Principal;
use crate::settings::Secret;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The identifier a principal's message key is derived from: `sid`, else `jti`.
pub fn message_key_id(principal: &Principal) -> Option<&str> {
    key_id(principal.sid.as_deref(), principal.jti.as_deref())
}

fn key_id<'a>(sid: Option<&'a str>, jti: Option<&'a str>) -> Option<&'a str> {
    sid.filter(|id| !id.is_empty())
        .or(jti.filter(|id| !id.is_empty()))
}

/// The message key of `principal`, base64url without padding; `None` when its token carries
/// neither `sid` nor `jti`.
pub fn message_key(master: &Secret, principal: &Principal) -> Option<String> {
    message_key_from(master, principal.sid.as_deref(), principal.jti.as_deref())
}

/// The message key of a token with these claims.
pub fn message_key_from(master: &Secret, sid: Option<&str>, jti: Option<&str>) -> Option<String> {
    key_id(sid, jti).map(|id| derive_message_key(master.expose(), id))
}

// TODO(envelope): use crate::envelope::derive_message_key (same derivation, typed key).
fn derive_message_key(master: &[u8], session_id: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it panic-free.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(master) else {
        return String::new();
    };
    mac.update(b"signet-msgkey-v1:");
    mac.update(session_id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    /// HMAC-SHA256 written out from RFC 2104, independent of the `hmac` crate.
    fn reference_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    fn principal(sid: Option<&str>, jti: Option<&str>) -> Principal {
        Principal {
            sub: "u".into(),
            roles: vec![],
            jti: jti.map(Into::into),
            sid: sid.map(Into::into),
            owner: None,
            name: None,
            issued_at: None,
            expires_at: 0,
            kid: "k".into(),
        }
    }

    #[test]
    fn the_key_is_the_documented_hmac_of_sid_else_jti() {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        for master in [&b"short master key"[..], &[7u8; 100][..]] {
            let secret = Secret::new(master.to_vec());
            let with_sid = message_key(&secret, &principal(Some("s1"), Some("j1")));
            let expected = b64(&reference_hmac(master, b"signet-msgkey-v1:s1"));
            assert_eq!(with_sid.as_deref(), Some(expected.as_str()));
            let with_jti = message_key(&secret, &principal(None, Some("j1")));
            let expected = b64(&reference_hmac(master, b"signet-msgkey-v1:j1"));
            assert_eq!(with_jti.as_deref(), Some(expected.as_str()));
            assert_eq!(message_key(&secret, &principal(None, None)), None);
        }
    }
}
