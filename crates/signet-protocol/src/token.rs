//! Access tokens as Signet issues them: the claims every token carries, and the `kid` naming the
//! HMAC secret a token is signed with. The server issues tokens through its key ring; the load
//! generator mints the same tokens from the server's secret.

use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The claims of an access token Signet issues.
#[derive(Debug, Clone, Serialize)]
pub struct AccessClaims {
    pub sub: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// The `kid` of an HMAC secret: a short hash, so rotation needs no naming and reveals nothing.
pub fn hmac_kid(secret: &Secret) -> String {
    let digest = Sha256::digest(secret.expose());
    format!(
        "hs-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..9])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kid_is_a_short_stable_hash_of_the_secret() {
        let kid = hmac_kid(&Secret::from_text("a secret"));
        assert_eq!(kid, hmac_kid(&Secret::from_text("a secret\n")));
        assert_ne!(kid, hmac_kid(&Secret::from_text("another secret")));
        assert!(kid.starts_with("hs-") && kid.len() == 15, "{kid}");
    }

    #[test]
    fn empty_optional_claims_are_left_out() {
        let claims = AccessClaims {
            sub: "u".into(),
            roles: Vec::new(),
            jti: "j".into(),
            sid: None,
            owner: None,
            name: None,
            iat: 1,
            nbf: 1,
            exp: 2,
            iss: "signet".into(),
            aud: "signet".into(),
        };
        let json = serde_json::to_value(&claims).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        assert!(
            !keys.contains(&"roles") && !keys.contains(&"sid"),
            "{keys:?}"
        );
    }
}
