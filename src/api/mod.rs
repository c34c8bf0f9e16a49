//! The REST API under `/api`: JSON in and out, errors as [`crate::http::ApiError`].

pub mod auth;

use actix_web::web;

/// Registers every `/api` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/api").service(auth::me));
}
