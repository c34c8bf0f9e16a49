//! `/api/auth/...`: login, refresh rotation, logout, who the caller is, message keys, and the
//! device key exchange.

use crate::auth::Authenticated;
use crate::http::{client_addr, ApiError, Json};
use crate::identity::{IdentityService, SessionTokens};
use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionTokensBody {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
    message_key: String,
}

fn tokens_response(tokens: SessionTokens) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SessionTokensBody {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_in: tokens.expires_in,
            message_key: tokens.message_key,
        })
}

/// `POST /api/auth/login` `{username, password}` -> `{accessToken, refreshToken, expiresIn,
/// messageKey}`; 401 `invalid_credentials`; 429 `rate_limited` with `Retry-After`.
#[post("/auth/login")]
pub async fn login(
    req: HttpRequest,
    identity: web::Data<IdentityService>,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let tokens = identity
        .login(&body.username, &body.password, client_addr(&req))
        .await?;
    Ok(tokens_response(tokens))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    refresh_token: String,
}

/// `POST /api/auth/refresh` `{refreshToken}` -> new tokens; 401 `invalid_refresh_token` or
/// `refresh_token_reused` (the session is then revoked).
#[post("/auth/refresh")]
pub async fn refresh(
    req: HttpRequest,
    identity: web::Data<IdentityService>,
    Json(body): Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let tokens = identity
        .refresh(&body.refresh_token, client_addr(&req))
        .await?;
    Ok(tokens_response(tokens))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogoutRequest {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// `POST /api/auth/logout` (Bearer) `{refreshToken}` -> 204: the access token is refused from
/// now on and its session ends.
#[post("/auth/logout")]
pub async fn logout(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    Json(body): Json<LogoutRequest>,
) -> Result<HttpResponse, ApiError> {
    identity
        .logout(&principal, body.refresh_token.as_deref(), client_addr(&req))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize)]
struct Me<'a> {
    sub: &'a str,
    username: &'a str,
    roles: &'a [String],
}

/// `GET /api/auth/me` (Bearer): the caller's subject, username and roles.
#[get("/auth/me")]
pub async fn me(
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
) -> Result<HttpResponse, ApiError> {
    let username = identity.username_of(&principal).await?;
    Ok(HttpResponse::Ok().json(Me {
        sub: &principal.sub,
        username: &username,
        roles: &principal.roles,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageKeyBody {
    message_key: String,
}

/// `GET /api/auth/message-key` (`Authorization: Bearer`, never a query string) -> `{messageKey}`
/// for an external identity provider's token, `identity.message_key_claims_max` times per
/// message session; 409 `message_key_claimed` after that. A Signet-issued token is answered
/// 403 `message_key_not_claimable`: its key comes only with login, refresh and the device-token
/// exchange, so a token leaked from a URL cannot sign commands.
#[get("/auth/message-key")]
pub async fn message_key(
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
) -> Result<HttpResponse, ApiError> {
    let message_key = identity.claim_message_key(&principal)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(MessageKeyBody { message_key }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTokenRequest {
    device_id: String,
    device_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceTokenBody {
    access_token: String,
    expires_in: i64,
    message_key: String,
}

/// `POST /api/auth/device-token` `{deviceId, deviceKey}` -> `{accessToken, expiresIn,
/// messageKey}`; 401 `invalid_device_credentials`.
#[post("/auth/device-token")]
pub async fn device_token(
    req: HttpRequest,
    identity: web::Data<IdentityService>,
    Json(body): Json<DeviceTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let token = identity
        .device_token(&body.device_id, &body.device_key, client_addr(&req))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DeviceTokenBody {
            access_token: token.access_token,
            expires_in: token.expires_in,
            message_key: token.message_key,
        }))
}
