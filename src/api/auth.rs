//! `/api/auth/...`: who the caller is.

use crate::auth::Authenticated;
use actix_web::{get, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
struct Me<'a> {
    sub: &'a str,
    username: &'a str,
    roles: &'a [String],
}

/// `GET /api/auth/me` (Bearer): the caller's subject, name and roles.
#[get("/auth/me")]
pub async fn me(Authenticated(principal): Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(Me {
        sub: &principal.sub,
        username: principal.name.as_deref().unwrap_or(&principal.sub),
        roles: &principal.roles,
    })
}
