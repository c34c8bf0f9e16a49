//! `GET /metrics`: the Prometheus exposition of [`crate::metrics::Metrics`]. On the main
//! listener it is for admins only; `[metrics] listen` adds a listener that serves it to anyone
//! who can reach that address (Prometheus), and nothing else.

use crate::auth::Authenticated;
use crate::http::ApiError;
use crate::metrics::{Metrics, CONTENT_TYPE};
use actix_web::{get, web, HttpResponse};

/// The main listener's `/metrics`: an admin's token is required.
#[get("/metrics")]
pub async fn admin_metrics(
    Authenticated(principal): Authenticated,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    if !principal.has_role("admin") {
        return Err(ApiError::forbidden("forbidden", "metrics are for admins"));
    }
    Ok(exposition(&metrics))
}

/// The metrics listener's `/metrics`, without authentication.
#[get("/metrics")]
pub async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    exposition(&metrics)
}

fn exposition(metrics: &Metrics) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header(("Cache-Control", "no-store"))
        .body(metrics.render())
}
