//! Where a request carries its token: `Authorization: Bearer` first, else the `access_token`
//! query parameter, which browsers need for WebSockets and SSE and which is therefore honoured
//! only on hub paths (`/hubs/...`), never on `/api/...`.

use super::{Authenticator, Principal, TokenError};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Path prefix on which the `access_token` query parameter is honoured.
pub const HUB_PATH_PREFIX: &str = "/hubs/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLocation {
    Header,
    Query,
}

/// Why a request's token was not accepted. The texts are what the client reads; the HTTP
/// answer (status, code, `WWW-Authenticate`) is `http`'s part, so `auth` needs no HTTP errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// 401 `invalid_token`.
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// 401 `invalid_token`.
    #[error("Authorization must be `Bearer <token>`")]
    NotBearer,
    /// 400 `conflicting_tokens`.
    #[error(
        "the Authorization header and the access_token query parameter carry different tokens"
    )]
    ConflictingTokens,
    /// 401 `missing_token`.
    #[error("a bearer token is required")]
    Missing,
    /// 401 `invalid_token`: it did not verify or was revoked (the reason goes to the log only).
    #[error("the token is not valid")]
    Invalid,
    /// 503 `store_unavailable`: whether the token is revoked could not be checked, so it is
    /// refused for now (fail closed); the client should retry, not discard its token.
    #[error("the token could not be checked against revocations; try again later")]
    StoreUnavailable,
    /// 500: the server was built without an [`Authenticator`] in its app data.
    #[error("Authenticator is not registered")]
    NotConfigured,
}

impl RequestAuthError {
    /// What a request learns of a refused token: only whether to retry (the reason goes to
    /// the log only).
    pub fn refused(err: super::TokenError) -> Self {
        tracing::debug!(reason = err.code(), "token refused");
        match err {
            super::TokenError::RevocationUnavailable => Self::StoreUnavailable,
            _ => Self::Invalid,
        }
    }
}

/// Finds the request's token. `Ok(None)` when there is none.
pub fn token_from_request(
    req: &HttpRequest,
) -> Result<Option<(String, TokenLocation)>, RequestAuthError> {
    let from_header = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| RequestAuthError::MalformedHeader)?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or(RequestAuthError::NotBearer)?;
            Some(token.to_string())
        }
    };
    let from_query = if req.path().starts_with(HUB_PATH_PREFIX) {
        query_param(req.query_string(), "access_token")
    } else {
        None
    };
    match (from_header, from_query) {
        (Some(h), Some(q)) if h != q => Err(RequestAuthError::ConflictingTokens),
        (Some(h), _) => Ok(Some((h, TokenLocation::Header))),
        (None, Some(q)) => Ok(Some((q, TokenLocation::Query))),
        (None, None) => Ok(None),
    }
}

/// The first value of `name` in a URL query string, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    // Only the value asked for is decoded into a string of its own.
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Which tokens a request may carry: every hub and API request names its policy where it is
/// authenticated ([`authenticate_request`]).
#[derive(Clone, Copy)]
pub enum TokenPolicy<'a> {
    /// The token must be valid now: the API, negotiate, a WebSocket.
    Current,
    /// A token valid now, or one whose `exp` has passed (it must still verify and be
    /// unrevoked) that `accept` takes for the principal it proves. Requests on an existing
    /// connection: the official clients send their negotiate-time token on every long-polling
    /// and SSE request, also after an in-band refresh, so the transports accept the token a
    /// connection was opened with while the connection itself holds a later one.
    ExpiredIf(&'a dyn Fn(&Principal) -> bool),
}

impl std::fmt::Debug for TokenPolicy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Current => "Current",
            Self::ExpiredIf(_) => "ExpiredIf",
        })
    }
}

/// The request's token, which it must carry: a missing one is counted as an authentication
/// failure. For a caller that verifies the token itself (an in-band refresh judges the new
/// token as such); every other one uses [`authenticate_request`].
pub fn bearer_token(req: &HttpRequest, auth: &Authenticator) -> Result<String, RequestAuthError> {
    let (token, _) = token_from_request(req)?.ok_or_else(|| {
        auth.metrics().auth_failed("missing");
        RequestAuthError::Missing
    })?;
    Ok(token)
}

/// The one way a request becomes a [`Principal`]: its token (`token_from_request`) verified
/// and checked against revocation under `policy`. Why a token was refused goes to the log
/// only: the client reads [`RequestAuthError::Invalid`], or `StoreUnavailable` when revocation
/// could not be checked.
pub async fn authenticate_request(
    req: &HttpRequest,
    auth: &Authenticator,
    policy: TokenPolicy<'_>,
) -> Result<Principal, RequestAuthError> {
    let token = bearer_token(req, auth)?;
    authenticate_token(&token, auth, policy).await
}

/// [`authenticate_request`] for a token already taken from its request ([`bearer_token`]), for
/// a caller that also keeps its [`TokenDigest`].
pub async fn authenticate_token(
    token: &str,
    auth: &Authenticator,
    policy: TokenPolicy<'_>,
) -> Result<Principal, RequestAuthError> {
    let verified = match (auth.authenticate(token).await, policy) {
        (Err(TokenError::Expired), TokenPolicy::ExpiredIf(accept)) => auth
            .authenticate_past_expiry(token)
            .await
            .and_then(|principal| {
                if accept(&principal) {
                    Ok(principal)
                } else {
                    Err(TokenError::Expired)
                }
            }),
        (verified, _) => verified,
    };
    verified.map_err(RequestAuthError::refused)
}

/// A token by its SHA-256: what a connection keeps of the token negotiate verified, so that the
/// WebSocket upgrade which follows with the very same token is recognised without verifying it
/// again ([`Authenticator::recheck`] re-checks what time and revocations can change). Compared
/// in constant time; the token itself is not kept.
#[derive(Clone, Copy)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The SHA-256 of `token`'s text.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether both digests are of the same token, in constant time.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Never prints the digest: it names a bearer token.
impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// Extractor for API routes that need an authenticated principal: `Authenticated(principal)`,
/// under [`TokenPolicy::Current`]. Answers 401 (`missing_token`, `invalid_token`) or 400
/// (`conflicting_tokens`) on its own.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = RequestAuthError;
    type Future = LocalBoxFuture<'static, Result<Self, RequestAuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let auth = req
                .app_data::<web::Data<Authenticator>>()
                .cloned()
                .ok_or(RequestAuthError::NotConfigured)?;
            authenticate_request(&req, &auth, TokenPolicy::Current)
                .await
                .map(Authenticated)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn found(req: &HttpRequest) -> Result<Option<(String, TokenLocation)>, RequestAuthError> {
        token_from_request(req)
    }

    #[test]
    fn header_first_then_query_on_hub_paths_only() {
        let req = TestRequest::get()
            .uri("/hubs/home?access_token=q%2Etoken")
            .to_http_request();
        assert_eq!(
            found(&req),
            Ok(Some(("q.token".into(), TokenLocation::Query)))
        );
        let req = TestRequest::get()
            .uri("/api/auth/me?access_token=q")
            .to_http_request();
        assert_eq!(found(&req), Ok(None));
        let req = TestRequest::get()
            .uri("/hubs/home?access_token=same")
            .insert_header(("Authorization", "Bearer same"))
            .to_http_request();
        assert_eq!(
            found(&req),
            Ok(Some(("same".into(), TokenLocation::Header)))
        );
    }

    #[test]
    fn a_token_digest_matches_only_its_own_token_and_never_prints() {
        let digest = TokenDigest::of("header.claims.signature");
        assert!(digest.matches(&TokenDigest::of("header.claims.signature")));
        assert!(!digest.matches(&TokenDigest::of("header.claims.signaturf")));
        assert!(!digest.matches(&TokenDigest::of("")));
        assert_eq!(format!("{digest:?}"), "TokenDigest(..)");
    }

    #[test]
    fn query_parameters_are_percent_decoded_and_empty_ones_absent() {
        let query = "id=a%2Bb&negotiateVersion=1&access_token=&x=+y+&id=second";
        assert_eq!(query_param(query, "id").as_deref(), Some("a+b"));
        assert_eq!(query_param(query, "negotiateVersion").as_deref(), Some("1"));
        assert_eq!(query_param(query, "x").as_deref(), Some(" y "));
        assert_eq!(query_param(query, "access_token"), None);
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(query_param("", "id"), None);
    }

    #[test]
    fn different_tokens_in_header_and_query_are_a_bad_request() {
        let req = TestRequest::get()
            .uri("/hubs/home/negotiate?access_token=one")
            .insert_header(("Authorization", "Bearer two"))
            .to_http_request();
        assert_eq!(found(&req), Err(RequestAuthError::ConflictingTokens));
    }

    #[test]
    fn a_non_bearer_authorization_is_refused() {
        let req = TestRequest::get()
            .uri("/hubs/home")
            .insert_header(("Authorization", "Basic abc"))
            .to_http_request();
        assert_eq!(found(&req), Err(RequestAuthError::NotBearer));
    }
}
