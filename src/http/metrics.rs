//! `GET /metrics` (admin): Prometheus text with connection counts, open upload streams and
//! closes by reason.

use crate::auth::Authenticated;
use crate::http::ApiError;
use crate::startup::AppState;
use actix_web::{get, web, HttpResponse};
use std::fmt::Write;

#[get("/metrics")]
pub async fn metrics(
    Authenticated(principal): Authenticated,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !principal.has_role("admin") {
        return Err(ApiError::forbidden("forbidden", "metrics are for admins"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP signet_connections Connections held now (negotiated or connected)."
    );
    let _ = writeln!(out, "# TYPE signet_connections gauge");
    let _ = writeln!(out, "signet_connections {}", state.connections.len());
    let _ = writeln!(
        out,
        "# HELP signet_upload_streams Client-to-server streams open now."
    );
    let _ = writeln!(out, "# TYPE signet_upload_streams gauge");
    let _ = writeln!(out, "signet_upload_streams {}", state.open_uploads.get());
    let _ = writeln!(
        out,
        "# HELP signet_connections_closed_total Connections closed, by reason."
    );
    let _ = writeln!(out, "# TYPE signet_connections_closed_total counter");
    for (reason, count) in state.close_stats.snapshot() {
        let _ = writeln!(
            out,
            "signet_connections_closed_total{{reason=\"{reason}\"}} {count}"
        );
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .insert_header(("Cache-Control", "no-store"))
        .body(out))
}
