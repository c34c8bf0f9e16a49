//! `POST /hubs/{hub}/refresh?id=<connectionToken>` with `Authorization: Bearer <new token>`:
//! in-band refresh without reconnecting, in the shape of the ASP.NET Core
//! authentication-refresh proposal. The connection's expiry and roles become the new token's.

use super::HubEndpoints;
use super::{authenticate, find_hub};
use crate::auth::{issue::unix_now, query_param};
use crate::connection::RefreshError;
use crate::http::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn refresh(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, ApiError> {
    let origin = super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let token = query_param(req.query_string(), "id").ok_or_else(|| {
        ApiError::bad_request(
            "missing_connection_token",
            "the `id` query parameter is required",
        )
    })?;
    let principal = authenticate(&req, &state).await?;
    let connection = state
        .connections
        .get(&token)
        .filter(|c| *c.hub == *hub.name)
        .ok_or_else(|| ApiError::not_found("unknown_connection", "no connection with this id"))?;
    let sub = principal.sub.clone();
    let lifetime = state
        .connections
        .refresh(&connection, principal, unix_now())
        .map_err(|err| match err {
            RefreshError::UserMismatch => ApiError::forbidden(
                "user_mismatch",
                "the new token belongs to another user than the connection",
            ),
            RefreshError::Closed => {
                ApiError::not_found("unknown_connection", "no connection with this id")
            }
        })?;
    if !crate::connection::admit(&state.auth, &connection).await {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the token was revoked; the connection is closed",
        ));
    }
    tracing::info!(target: "audit", event = "token_refreshed", via = "http", %sub, connection = %connection.log_id(), "connection token refreshed");
    state.metrics.token_refreshed("connection", "success");
    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, origin);
    Ok(response
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "tokenLifetimeSeconds": lifetime })))
}
