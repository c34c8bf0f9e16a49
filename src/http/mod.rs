//! HTTP plumbing shared by every route: the JSON error type, the JSON body extractor, request
//! logging, and the small routes that belong to no layer (health).

mod error;
pub mod health;
pub mod json;
pub mod metrics;
pub mod request_log;

pub use error::ApiError;
pub use json::{Json, JsonLimit};

/// The client's address as the socket sees it (rate limits and audit events). A forwarding
/// header is not trusted: anyone could set it.
pub fn client_addr(req: &actix_web::HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|addr| addr.ip())
}
