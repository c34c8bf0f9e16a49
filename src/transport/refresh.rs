//! `POST /hubs/{hub}/refresh?id=<connectionToken>` with `Authorization: Bearer <new token>`:
//! in-band refresh without reconnecting, in the shape of the ASP.NET Core
//! authentication-refresh proposal. The connection's expiry and roles become the new token's;
//! the refresh itself is [`crate::connection::refresh`], as for the `RefreshToken` hub method.

use super::HubEndpoints;
use super::{find_hub, TransportError};
use crate::auth::{bearer_token, query_param};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn refresh(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let origin = super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let id = query_param(req.query_string(), "id").ok_or(TransportError::MissingConnectionToken)?;
    let token = bearer_token(&req, &state.auth)?;
    let connection = state.connections.get(&id).filter(|c| *c.hub == *hub.name);
    let lifetime = crate::connection::refresh(
        &state.auth,
        &state.connections,
        connection.as_deref(),
        &token,
        "http",
    )
    .await?;
    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, origin);
    Ok(response
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "tokenLifetimeSeconds": lifetime })))
}
