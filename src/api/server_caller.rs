//! Who calls the publish API: a backend with an API key (`Authorization: ApiKey sgk_...`, or
//! `Bearer sgk_...`), or with a JWT holding the `signet:server` role (every hub, every action).

use crate::auth::{authenticate_request, Authenticator, Principal, TokenPolicy};
use crate::http::ApiError;
use crate::identity::{scopes_allow, ApiKeys, PublishAction, API_KEY_PREFIX};
use crate::store::ApiKey;
use actix_web::http::header;
use actix_web::HttpRequest;

/// The role a JWT needs to drive every hub through the publish API.
pub const SERVER_ROLE: &str = "signet:server";

/// An authenticated caller of the publish API.
#[derive(Debug)]
pub enum ServerCaller {
    Key(ApiKey),
    Token(Principal),
}

impl ServerCaller {
    /// Authenticates `req`: an API key when the `Authorization` header carries one, else a
    /// bearer JWT (which [`ServerCaller::authorize`] requires to hold [`SERVER_ROLE`]).
    pub async fn authenticate(
        req: &HttpRequest,
        auth: &Authenticator,
        keys: &ApiKeys,
    ) -> Result<Self, ApiError> {
        if let Some(key) = presented_key(req) {
            return Ok(Self::Key(keys.verify(key).await?));
        }
        let principal = authenticate_request(req, auth, TokenPolicy::Current).await?;
        Ok(Self::Token(principal))
    }

    /// 403 `forbidden` unless the caller may do `action` on `hub`: a key with a scope that
    /// grants it, or a token with [`SERVER_ROLE`].
    pub fn authorize(&self, hub: &str, action: PublishAction) -> Result<(), ApiError> {
        match self {
            Self::Key(key) if scopes_allow(&key.scopes, hub, action) => Ok(()),
            Self::Key(_) => Err(ApiError::forbidden(
                "forbidden",
                format!("this API key has no scope hub:{hub}:{}", action.as_str()),
            )),
            Self::Token(principal) if principal.has_role(SERVER_ROLE) => Ok(()),
            Self::Token(_) => Err(ApiError::forbidden(
                "forbidden",
                format!("the publish API needs an API key or a token with role {SERVER_ROLE}"),
            )),
        }
    }

    /// How audit events name the caller: `key:<id>` or the token's `sub`.
    pub fn label(&self) -> String {
        match self {
            Self::Key(key) => format!("key:{}", key.id),
            Self::Token(principal) => principal.sub.clone(),
        }
    }
}

/// The API key in `Authorization: ApiKey <key>` or `Authorization: Bearer sgk_...`.
fn presented_key(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    let is_key = scheme.eq_ignore_ascii_case("apikey")
        || (scheme.eq_ignore_ascii_case("bearer") && credentials.starts_with(API_KEY_PREFIX));
    is_key.then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_key_is_found_under_either_scheme_and_a_jwt_is_left_alone() {
        let with = |value: &str| {
            let req = TestRequest::default()
                .insert_header((header::AUTHORIZATION, value))
                .to_http_request();
            presented_key(&req).map(str::to_string)
        };
        assert_eq!(with("ApiKey sgk_abc").as_deref(), Some("sgk_abc"));
        assert_eq!(with("apikey  sgk_abc ").as_deref(), Some("sgk_abc"));
        assert_eq!(with("Bearer sgk_abc").as_deref(), Some("sgk_abc"));
        assert_eq!(with("Bearer eyJhbGciOi.x.y"), None);
        assert_eq!(with("Basic dXNlcjpwYXNz"), None);
    }
}
