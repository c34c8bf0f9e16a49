//! The JSON error every HTTP route answers with: `{"error": "<code>", "message": "..."}`.
//! 5xx bodies are opaque; their cause goes to the log. The HTTP answers of other layers' request
//! errors live here too, so those layers need nothing from `http`.

use crate::auth::RequestAuthError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(header::HeaderName, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::UNAUTHORIZED, code, message);
        let challenge = match code {
            "missing_token" => "Bearer".to_string(),
            _ => format!("Bearer error=\"{code}\""),
        };
        err.headers.push((header::WWW_AUTHENTICATE, challenge));
        err
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A server-side failure: the client sees a fixed text, the log gets the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server could not complete the request",
        )
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.as_str()));
        }
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        response.json(Body {
            error: self.code,
            message: &self.message,
        })
    }
}

/// A token refused at the door: 401 with a `WWW-Authenticate` challenge, 400 for two different
/// tokens, 500 for a server built without an authenticator.
impl From<RequestAuthError> for ApiError {
    fn from(err: RequestAuthError) -> Self {
        let message = err.to_string();
        match err {
            RequestAuthError::Missing => Self::unauthorized("missing_token", message),
            RequestAuthError::MalformedHeader
            | RequestAuthError::NotBearer
            | RequestAuthError::Invalid => Self::unauthorized("invalid_token", message),
            RequestAuthError::ConflictingTokens => Self::bad_request("conflicting_tokens", message),
            // Until the revocation feed is back: the keeper retries every half second.
            RequestAuthError::StoreUnavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                message,
            )
            .with_header(header::RETRY_AFTER, "1"),
            RequestAuthError::NotConfigured => Self::internal(err),
        }
    }
}

impl ResponseError for RequestAuthError {
    fn status_code(&self) -> StatusCode {
        ApiError::from(self.clone()).status
    }

    fn error_response(&self) -> HttpResponse {
        ApiError::from(self.clone()).error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_tokens_keep_their_codes_and_challenges() {
        let cases = [
            (
                RequestAuthError::Missing,
                401,
                "missing_token",
                Some("Bearer"),
            ),
            (
                RequestAuthError::MalformedHeader,
                401,
                "invalid_token",
                Some("Bearer error=\"invalid_token\""),
            ),
            (
                RequestAuthError::NotBearer,
                401,
                "invalid_token",
                Some("Bearer error=\"invalid_token\""),
            ),
            (
                RequestAuthError::Invalid,
                401,
                "invalid_token",
                Some("Bearer error=\"invalid_token\""),
            ),
            (
                RequestAuthError::ConflictingTokens,
                400,
                "conflicting_tokens",
                None,
            ),
            (
                RequestAuthError::StoreUnavailable,
                503,
                "store_unavailable",
                None,
            ),
            (RequestAuthError::NotConfigured, 500, "internal_error", None),
        ];
        for (err, status, code, challenge) in cases {
            let api = ApiError::from(err.clone());
            assert_eq!(api.status.as_u16(), status, "{err:?}");
            assert_eq!(api.code, code, "{err:?}");
            let found = api
                .headers
                .iter()
                .find(|(name, _)| *name == header::WWW_AUTHENTICATE)
                .map(|(_, value)| value.as_str());
            assert_eq!(found, challenge, "{err:?}");
            let waits = api
                .headers
                .iter()
                .any(|(name, _)| *name == header::RETRY_AFTER);
            assert_eq!(waits, status == 503, "{err:?}");
            assert_eq!(err.status_code().as_u16(), status);
        }
        assert_eq!(
            ApiError::from(RequestAuthError::Invalid).message,
            "the token is not valid"
        );
    }
}
