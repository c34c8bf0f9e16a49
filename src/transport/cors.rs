//! Browser origins. CORS does not protect WebSockets, so negotiate and every transport request
//! check `Origin` against the allow-list themselves. Requests without `Origin` (devices,
//! servers) are allowed, and so are same-origin requests (the console Signet serves) unless
//! `server.allow_same_origin` is off.
//!
//! "Same origin" means the `Origin`'s host and port equal the request's `Host` header (over
//! HTTP/2, which has no `Host`, the `:authority` of the request's URI). Both come
//! from the browser, so a page whose DNS name is rebound to this server's address passes it:
//! it names its own host in both. That page still needs a token, which a browser never adds
//! by itself (Signet uses no cookies), so the rule lets through nothing a token does not.

use super::HubEndpoints;
use super::TransportError;
use crate::settings::ServerSettings;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};

/// Headers a SignalR client sends that preflights must allow.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-requested-with, x-signalr-user-agent";
const ALLOWED_METHODS: &str = "GET, POST, DELETE, OPTIONS";

/// `Ok(Some(origin))` for an allowed browser origin, `Ok(None)` without `Origin`, 403 otherwise.
pub fn check_origin(
    req: &HttpRequest,
    settings: &ServerSettings,
) -> Result<Option<HeaderValue>, TransportError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(None);
    };
    let text = origin.to_str().unwrap_or("");
    let same_origin = settings.allow_same_origin
        && request_authority(req).is_some_and(|host| {
            text.strip_prefix("http://")
                .or_else(|| text.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        });
    let listed = settings
        .allowed_origins
        .iter()
        .any(|a| a.eq_ignore_ascii_case(text));
    if same_origin || listed {
        Ok(Some(origin.clone()))
    } else {
        Err(TransportError::OriginNotAllowed)
    }
}

/// The host and port the client addressed: `Host` in HTTP/1.1, `:authority` in HTTP/2.
fn request_authority(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Adds the CORS answer for an allowed origin to a response.
pub fn allow(builder: &mut HttpResponseBuilder, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        builder
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"))
            .insert_header((header::VARY, "Origin"));
    }
}

/// Adds the CORS answer for an allowed origin to a finished response (errors included, so that
/// a browser client can read their status).
pub fn allow_response(response: &mut HttpResponse, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// `OPTIONS` on hub paths: the preflight of a browser client.
pub async fn preflight(
    req: HttpRequest,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let origin = check_origin(&req, &state.settings.server)?;
    let mut response = HttpResponse::NoContent();
    allow(&mut response, origin);
    response
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"));
    Ok(response.finish())
}
