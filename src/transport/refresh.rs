//! `POST /hubs/{hub}/refresh?id=<connectionToken>` with `Authorization: Bearer <new token>`:
//! in-band refresh without reconnecting, in the shape of the ASP.NET Core
//! authentication-refresh proposal. The connection's expiry and roles become the new token's;
//! the refresh itself is [`crate::connection::refresh`], as for the `RefreshToken` hub method.

use super::{find_hub, forward, HubEndpoints, TransportError};
use crate::auth::{bearer_token, query_param};
use crate::cluster::forward::ForwardKind;
use actix_web::http::header::HeaderValue;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

pub async fn refresh(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let origin = super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let id = query_param(req.query_string(), "id").ok_or(TransportError::MissingConnectionToken)?;
    let token = bearer_token(&req, &state.auth)?;
    if forward::held_elsewhere(&state, &id) {
        // Verified here; the node holding the connection gets the principal, not the token.
        let principal = crate::connection::verify_refresh(&state.auth, &token).await?;
        let remote = forward::locate(&state, hub, id, principal, origin).await?;
        return forward::answer(&state, remote, ForwardKind::Refresh, Bytes::new()).await;
    }
    let connection = state.connections.get(&id).filter(|c| *c.hub == *hub.name);
    let lifetime = crate::connection::refresh(
        &state.auth,
        &state.connections,
        connection.as_deref(),
        &token,
        "http",
    )
    .await?;
    Ok(refreshed(lifetime, origin))
}

/// 200 with the connection's new lifetime.
pub(super) fn refreshed(lifetime: i64, origin: Option<HeaderValue>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, origin);
    response
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "tokenLifetimeSeconds": lifetime }))
}
