//! The JWT key ring: Signet's own HMAC secrets (current and previous) and the public keys of
//! external identity providers, each key pinned to the algorithms it may verify.
//!
//! A token is matched to keys by its `kid`; a token without `kid` is tried against every key
//! pinned to its `alg`. An HMAC token can therefore never be checked against a public key
//! (algorithm confusion), and `alg: none` never parses.

use super::principal::{Principal, TokenClaims};
use crate::settings::{ExternalIssuer, HmacAlgorithm, JwtSettings, ResolvedSecrets};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// Why a token was refused. The variants are for logs and metrics; clients get one 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not accepted for its key")]
    Algorithm,
    #[error("token names an unknown key id")]
    UnknownKey,
    #[error("token signature does not verify")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token audience is not accepted")]
    Audience,
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("token has been revoked")]
    Revoked,
    /// Whether the token is revoked could not be learnt: it is refused (fail closed).
    #[error("token revocation could not be checked")]
    RevocationUnavailable,
}

impl TokenError {
    /// Short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_kid",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::Revoked => "revoked",
            Self::RevocationUnavailable => "revocation_unavailable",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(err: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match err.kind() {
            K::InvalidSignature => Self::Signature,
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::InvalidIssuer => Self::Issuer,
            K::InvalidAudience => Self::Audience,
            K::MissingRequiredClaim(claim) => Self::MissingClaim(claim.clone()),
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
                Self::Algorithm
            }
            _ => Self::Malformed,
        }
    }
}

/// A key problem found at start-up.
#[derive(Debug, thiserror::Error)]
#[error("jwt key `{key}`: {message}")]
pub struct KeyRingError {
    pub key: String,
    pub message: String,
}

struct VerifyingKey {
    kid: String,
    key: DecodingKey,
    /// Exactly the algorithms this key may verify, and the issuer/audience its tokens carry.
    validation: Validation,
    /// An external identity provider's key, not one of Signet's own secrets.
    external: bool,
}

/// Verifies every accepted token and signs the tokens Signet issues.
pub struct KeyRing {
    signing_kid: String,
    signing_key: EncodingKey,
    signing_algorithm: Algorithm,
    keys: Vec<VerifyingKey>,
    by_kid: HashMap<String, usize>,
    issuer: String,
    audience: String,
    /// Seconds `exp` and `nbf` may be off by (`jwt.leeway_secs`).
    leeway_secs: u64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub use signet_protocol::token::hmac_kid;

impl KeyRing {
    pub fn new(settings: &JwtSettings, secrets: &ResolvedSecrets) -> Result<Self, KeyRingError> {
        let hmac_algorithms = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        let mut ring = Self {
            signing_kid: hmac_kid(&secrets.jwt),
            signing_key: EncodingKey::from_secret(secrets.jwt.expose()),
            signing_algorithm: match settings.algorithm {
                HmacAlgorithm::HS256 => Algorithm::HS256,
                HmacAlgorithm::HS384 => Algorithm::HS384,
                HmacAlgorithm::HS512 => Algorithm::HS512,
            },
            keys: Vec::new(),
            by_kid: HashMap::new(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway_secs,
        };
        for secret in std::iter::once(&secrets.jwt).chain(&secrets.jwt_previous) {
            let validation = validation(
                &hmac_algorithms,
                &settings.issuer,
                &settings.audience,
                settings.leeway_secs,
            );
            ring.add(
                hmac_kid(secret),
                DecodingKey::from_secret(secret.expose()),
                validation,
                false,
            )?;
        }
        for (i, issuer) in settings.external.iter().enumerate() {
            ring.add_external(i, issuer, settings.leeway_secs)?;
        }
        Ok(ring)
    }

    fn add(
        &mut self,
        kid: String,
        key: DecodingKey,
        validation: Validation,
        external: bool,
    ) -> Result<(), KeyRingError> {
        if self.by_kid.contains_key(&kid) {
            return Err(KeyRingError {
                key: kid,
                message: "the same key id is configured twice".into(),
            });
        }
        self.by_kid.insert(kid.clone(), self.keys.len());
        self.keys.push(VerifyingKey {
            kid,
            key,
            validation,
            external,
        });
        Ok(())
    }

    fn add_external(
        &mut self,
        index: usize,
        issuer: &ExternalIssuer,
        leeway: u64,
    ) -> Result<(), KeyRingError> {
        let name = format!("jwt.external[{index}]");
        let err = |message: String| KeyRingError {
            key: name.clone(),
            message,
        };
        if let (Some(pem_file), Some(alg), Some(kid)) =
            (&issuer.pem_file, &issuer.algorithm, &issuer.kid)
        {
            let algorithm: Algorithm = alg
                .parse()
                .map_err(|_| err(format!("unknown algorithm `{alg}`")))?;
            let pem = read(pem_file).map_err(&err)?;
            let key = match algorithm {
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256
                | Algorithm::PS384 | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => {
                    return Err(err(format!(
                        "`{alg}` is not a public-key algorithm; external issuers use RS*, PS*, ES* or EdDSA"
                    )))
                }
            }
            .map_err(|e| err(format!("{}: not a usable {alg} public key: {e}", pem_file.display())))?;
            let validation = validation(&[algorithm], &issuer.issuer, &issuer.audience, leeway);
            return self.add(kid.clone(), key, validation, true);
        }
        let Some(jwks_file) = &issuer.jwks_file else {
            return Err(err(
                "needs pem_file with algorithm and kid, or jwks_file".into()
            ));
        };
        let text = read(jwks_file).map_err(&err)?;
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|e| err(format!("{}: not a JWKS document: {e}", jwks_file.display())))?;
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| err("every JWKS key needs a `kid`".into()))?;
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::OctetKey(_), _) => {
                    return Err(err(format!(
                        "key `{kid}` is symmetric; external issuers must use public keys"
                    )))
                }
                (_, Some(alg)) => alg
                    .to_string()
                    .parse::<Algorithm>()
                    .map_err(|_| err(format!("key `{kid}` has unsupported alg `{alg}`")))?,
                (AlgorithmParameters::EllipticCurve(p), None) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                (AlgorithmParameters::EllipticCurve(p), None) if p.curve == EllipticCurve::P384 => {
                    Algorithm::ES384
                }
                (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
                _ => {
                    return Err(err(format!(
                        "key `{kid}` has no `alg`; it must be pinned to one algorithm"
                    )))
                }
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| err(format!("key `{kid}` is not usable: {e}")))?;
            let validation = validation(&[algorithm], &issuer.issuer, &issuer.audience, leeway);
            self.add(kid, key, validation, true)?;
        }
        Ok(())
    }

    /// Verifies signature, algorithm, `exp`, `nbf`, `iss` and `aud`; revocation is checked by
    /// the caller, which owns the revocation store.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        self.verify_checking_expiry(token, true)
    }

    /// Like [`KeyRing::verify`] but accepts a token whose `exp` has passed. Only for proving
    /// who sends a request on a connection that holds a later token of its own (see
    /// `transport::connection_request`); never to open anything.
    pub fn verify_past_expiry(&self, token: &str) -> Result<Principal, TokenError> {
        self.verify_checking_expiry(token, false)
    }

    fn verify_checking_expiry(
        &self,
        token: &str,
        check_exp: bool,
    ) -> Result<Principal, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        match header.kid.as_deref() {
            Some(kid) => {
                let index = *self.by_kid.get(kid).ok_or(TokenError::UnknownKey)?;
                self.verify_with(token, &self.keys[index], check_exp)
            }
            None => {
                let mut last = TokenError::UnknownKey;
                for key in self
                    .keys
                    .iter()
                    .filter(|k| k.validation.algorithms.contains(&header.alg))
                {
                    match self.verify_with(token, key, check_exp) {
                        Err(TokenError::Signature) => last = TokenError::Signature,
                        other => return other,
                    }
                }
                Err(last)
            }
        }
    }

    fn verify_with(
        &self,
        token: &str,
        key: &VerifyingKey,
        check_exp: bool,
    ) -> Result<Principal, TokenError> {
        let data = if check_exp {
            jsonwebtoken::decode::<TokenClaims>(token, &key.key, &key.validation)?
        } else {
            let mut validation = key.validation.clone();
            validation.validate_exp = false;
            jsonwebtoken::decode::<TokenClaims>(token, &key.key, &validation)?
        };
        if data.claims.sub.is_empty() {
            return Err(TokenError::MissingClaim("sub".into()));
        }
        Ok(Principal::from_claims(data.claims, &key.kid))
    }

    /// Signs `claims` with the current secret; the header carries its `kid`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.signing_algorithm);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing_key)
    }

    /// Whether the key `kid` belongs to an external identity provider (`jwt.external`) rather
    /// than to Signet: a verified principal's `kid` tells who issued its token.
    pub fn is_external(&self, kid: &str) -> bool {
        self.by_kid
            .get(kid)
            .and_then(|&index| self.keys.get(index))
            .is_some_and(|key| key.external)
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The leeway every key's `exp` and `nbf` checks allow.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }
}

fn validation(algorithms: &[Algorithm], issuer: &str, audience: &str, leeway: u64) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms.to_vec();
    v.leeway = leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    v
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
