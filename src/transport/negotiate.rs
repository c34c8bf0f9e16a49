//! `POST /hubs/{hub}/negotiate`: creates a connection and tells the client how to reach it
//! (TransportProtocols.md). Version 1 returns a secret `connectionToken` beside the public
//! `connectionId`; version 0 (no `negotiateVersion`) uses the id as the token.

use super::{authenticate, create_connection, expire_unattached, find_hub};
use crate::auth::{issue::unix_now, query_param};
use crate::http::ApiError;
use crate::startup::AppState;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NegotiateResponse<'a> {
    negotiate_version: u32,
    connection_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_token: Option<&'a str>,
    /// Seconds until the token behind the connection expires (Signet extension).
    token_lifetime_seconds: i64,
    available_transports: Vec<AvailableTransport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AvailableTransport {
    transport: &'static str,
    transfer_formats: &'static [&'static str],
}

pub async fn negotiate(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let origin = super::check_origin(&req, &state.settings.server.allowed_origins)?;
    let hub = find_hub(&state, &path)?;
    let principal = authenticate(&req, &state).await?;
    let version = query_param(req.query_string(), "negotiateVersion")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0)
        .min(1);
    let token_lifetime_seconds = principal.expires_at.saturating_sub(unix_now()).max(0);
    let connection = create_connection(&state, &hub, principal, version == 0)?;
    expire_unattached(&state, connection.clone());

    let body = NegotiateResponse {
        negotiate_version: version,
        connection_id: &connection.id,
        connection_token: (version >= 1).then_some(connection.token.as_str()),
        token_lifetime_seconds,
        available_transports: vec![AvailableTransport {
            transport: "WebSockets",
            transfer_formats: &["Text", "Binary"],
        }],
    };
    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, origin);
    Ok(response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}
