//! The JSON body extractor every API route uses: size-limited (413), `application/json` only
//! (415), and a parse error answers 400 `invalid_json` naming the offending field
//! (`serde_path_to_error`), e.g. "`password`: invalid type: integer `5`, expected a string".

use super::ApiError;
use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// The largest JSON body accepted, registered as app data (`server.max_request_body_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct JsonLimit(pub usize);

/// A deserialized JSON request body.
#[derive(Debug)]
pub struct Json<T>(pub T);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server accepts",
    )
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence.starts_with("application/")
            && essence.to_ascii_lowercase().ends_with("+json"))
}

/// Parses `body`, naming the field that failed.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if path.is_empty() || path == "." {
            inner.to_string()
        } else {
            format!("`{path}`: {inner}")
        };
        ApiError::bad_request("invalid_json", message)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    Ok(value)
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<JsonLimit>>()
            .map_or(16 * 1024, |l| l.0);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let early = if declared.is_some_and(|len| len > limit) {
            Some(too_large())
        } else if !is_json(req) {
            Some(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be application/json",
            ))
        } else {
            None
        };
        let mut payload = payload.take();
        Box::pin(async move {
            if let Some(err) = early {
                return Err(err);
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("the body could not be read: {e}"),
                    )
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            parse(&body).map(Json)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        password: String,
        nested: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn message(body: &str) -> String {
        parse::<Login>(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn errors_name_the_field() {
        assert!(message(r#"{"username":"a","password":5}"#).starts_with("`password`: invalid type"));
        assert!(message(r#"{"username":"a"}"#).contains("missing field `password`"));
        assert!(
            message(r#"{"username":"a","password":"b","nested":{"count":-1}}"#)
                .starts_with("`nested.count`:")
        );
        assert!(!message(r#"{"username":"a","#).is_empty());
        assert!(!message(r#"{"username":"a","password":"b"} trailing"#).is_empty());
    }
}
