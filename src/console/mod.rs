//! The browser console at `/`: static files compiled into the binary (no install step, no
//! network), served with the headers a login page needs. The page is the reference browser
//! client: it imports `clients/js` (served under `/js/`) and talks to the same REST API and hub
//! as any other client; the server gives it no privilege.
//!
//! Every console response, errors and `304`s included, goes through [`secured`], so none can
//! miss the Content-Security-Policy or its siblings.

mod assets;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use assets::Asset;

/// Scripts, styles and images from this origin only, nothing inline, no `eval`; connections
/// (fetch and WebSockets) to this origin only; never framed; no `<base>`, plugins or foreign
/// form targets; DOM sinks that parse HTML (`innerHTML`...) refuse strings (Trusted Types with
/// no policy), so the page cannot be turned into an injection point by data it displays.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// The headers every console response carries.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    // For browsers that predate `frame-ancestors`.
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    ),
];

/// Registers `/`, `/console/{file}` and `/js/{file}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(index))
            .route(web::head().to(index))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/console/{file}")
            .route(web::get().to(console_file))
            .route(web::head().to(console_file))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/js/{file}")
            .route(web::get().to(client_file))
            .route(web::head().to(client_file))
            .default_service(web::to(method_not_allowed)),
    );
}

/// A response builder with the console's security headers.
fn secured(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    for (name, value) in SECURITY_HEADERS {
        builder.insert_header((*name, *value));
    }
    builder
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, &assets::INDEX)
}

async fn console_file(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    match assets::console_file(&file) {
        Some(asset) => serve(&req, asset),
        None => not_found(),
    }
}

async fn client_file(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    match assets::client_file(&file) {
        Some(asset) => serve(&req, asset),
        None => not_found(),
    }
}

/// The asset, or `304` when the browser's copy is current. Assets carry no fingerprint in their
/// names, so browsers revalidate each time (`no-cache`) and a new binary's files apply at once.
fn serve(req: &HttpRequest, asset: &'static Asset) -> HttpResponse {
    let etag = asset.etag();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = secured(if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    });
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag));
    if fresh {
        return response.finish();
    }
    // For HEAD, actix sends the headers of this body (its length included) without the body.
    response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.body)
}

fn not_found() -> HttpResponse {
    secured(StatusCode::NOT_FOUND)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .body("not found\n")
}

/// Anything but GET and HEAD, e.g. the login form posted by a browser that could not run the
/// page's script: refused, and the password goes no further.
async fn method_not_allowed() -> HttpResponse {
    secured(StatusCode::METHOD_NOT_ALLOWED)
        .insert_header((header::ALLOW, HeaderValue::from_static("GET, HEAD")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
        .body("the console is a static page: only GET and HEAD\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_nothing_inline() {
        for directive in CONTENT_SECURITY_POLICY.split(';') {
            assert!(!directive.contains("unsafe"), "{directive}");
        }
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(CONTENT_SECURITY_POLICY.contains("connect-src 'self'"));
    }
}
