//! `POST /hubs/{hub}/negotiate`: creates a connection and tells the client how to reach it
//! (TransportProtocols.md). Version 1 returns a secret `connectionToken` beside the public
//! `connectionId`; version 0 (no `negotiateVersion`) uses the id as the token. The transports
//! listed are those the configuration enables, each with the transfer formats it carries:
//! Server-Sent Events carry text only, so MessagePack clients skip them.

use super::HubEndpoints;
use super::{create_connection, find_hub, is_enabled, TransportError};
use crate::auth::{
    authenticate_token, bearer_token, issue::unix_now, query_param, TokenDigest, TokenPolicy,
};
use crate::connection::TransportKind;
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
    /// Only written when granted: the official clients refuse a server that grants it unasked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    use_stateful_reconnect: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AvailableTransport {
    transport: &'static str,
    transfer_formats: &'static [&'static str],
}

/// Every transport in the order clients should try them, with its transfer formats.
const TRANSPORTS: [(TransportKind, &[&str]); 3] = [
    (TransportKind::WebSockets, &["Text", "Binary"]),
    (TransportKind::ServerSentEvents, &["Text"]),
    (TransportKind::LongPolling, &["Text", "Binary"]),
];

pub async fn negotiate(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let origin = super::check_origin(&req, &state.settings.server)?;
    let hub = find_hub(&state, &path)?;
    let token = bearer_token(&req, &state.auth)?;
    let principal = authenticate_token(&token, &state.auth, TokenPolicy::Current).await?;
    let query = req.query_string();
    let version = query_param(query, "negotiateVersion")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0)
        .min(1);
    let stateful_reconnect = state.settings.transports.stateful_reconnect
        && query_param(query, "useStatefulReconnect")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let token_lifetime_seconds = principal.expires_at.saturating_sub(unix_now()).max(0);
    let connection = create_connection(
        &state,
        &hub,
        principal,
        Some(TokenDigest::of(&token)),
        version == 0,
    )
    .await?;
    if stateful_reconnect {
        connection.request_stateful_reconnect();
    }

    let body = NegotiateResponse {
        negotiate_version: version,
        connection_id: &connection.id,
        connection_token: (version >= 1).then_some(connection.token.as_str()),
        token_lifetime_seconds,
        available_transports: TRANSPORTS
            .iter()
            .filter(|(kind, _)| is_enabled(&state.settings.transports, *kind))
            .map(|&(kind, transfer_formats)| AvailableTransport {
                transport: kind.name(),
                transfer_formats,
            })
            .collect(),
        use_stateful_reconnect: stateful_reconnect,
    };
    let mut response = HttpResponse::Ok();
    super::cors::allow(&mut response, origin);
    Ok(response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}
