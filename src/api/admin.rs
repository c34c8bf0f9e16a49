//! `/api/admin/...`: operations for the `admin` role.

use crate::auth::{Authenticated, Principal};
use crate::http::{client_addr, ApiError};
use crate::identity::{IdentityService, ADMIN_ROLE};
use crate::metrics::StatsSeries;
use actix_web::{get, post, web, HttpRequest, HttpResponse};

fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.has_role(ADMIN_ROLE) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "forbidden",
            "this operation needs the admin role",
        ))
    }
}

/// `POST /api/admin/users/{username}/revoke` (admin) -> 204: every token issued to the user
/// (and to their devices) before now is refused from now on; their sessions end.
#[post("/admin/users/{username}/revoke")]
pub async fn revoke_user(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&principal)?;
    identity
        .revoke_user(&principal, &username, client_addr(&req))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/admin/stats` (admin) -> `{intervalSecs, points: [{t, connections, messagesPerSec,
/// invocationsPerSec, envelopeRejectionsPerSec}]}`, oldest first: what the console charts.
#[get("/admin/stats")]
pub async fn stats(
    Authenticated(principal): Authenticated,
    series: web::Data<StatsSeries>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&principal)?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "intervalSecs": series.interval().as_secs(),
            "points": series.points(),
        })))
}
