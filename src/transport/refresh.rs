//! `POST /hubs/{hub}/refresh?id=<connectionToken>` with `Authorization: Bearer <new token>`:
//! in-band refresh without reconnecting, in the shape of the ASP.NET Core
//! authentication-refresh proposal. The connection's expiry and roles become the new token's.

use super::HubEndpoints;
use super::{authenticate, find_hub, TransportError};
use crate::auth::{issue::unix_now, query_param};
use crate::connection::RefreshError;
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn refresh(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let origin = super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let token =
        query_param(req.query_string(), "id").ok_or(TransportError::MissingConnectionToken)?;
    let principal = authenticate(&req, &state).await?;
    let connection = state
        .connections
        .get(&token)
        .filter(|c| *c.hub == *hub.name)
        .ok_or(TransportError::UnknownConnection)?;
    let sub = principal.sub.clone();
    let lifetime = state
        .connections
        .refresh(&connection, principal, unix_now())
        .map_err(|err| match err {
            RefreshError::UserMismatch => TransportError::RefreshUserMismatch,
            RefreshError::Closed => TransportError::UnknownConnection,
        })?;
    if !crate::connection::admit(&state.auth, &connection).await {
        return Err(TransportError::RevokedOnRefresh);
    }
    tracing::info!(target: "audit", event = "token_refreshed", via = "http", %sub, connection = %connection.log_id(), "connection token refreshed");
    state.metrics.token_refreshed("connection", "success");
    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, origin);
    Ok(response
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "tokenLifetimeSeconds": lifetime })))
}
