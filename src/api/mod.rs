//! The REST API under `/api`: JSON in and out (camelCase), errors as [`crate::http::ApiError`].
//! Handlers are thin: they extract, call the identity service (or, for the publish API, a hub's
//! lifetime manager), and shape the answer.

pub mod admin;
pub mod auth;
pub mod devices;
pub mod publish;
mod server_caller;

pub use publish::PublishApi;

use crate::auth::RevocationError;
use crate::http::ApiError;
use crate::identity::{HashingError, IdentityError};
use actix_web::http::{header, StatusCode};
use actix_web::web;

/// Registers every `/api` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let api = web::scope("/api")
        .service(auth::login)
        .service(auth::refresh)
        .service(auth::logout)
        .service(auth::me)
        .service(auth::message_key)
        .service(auth::device_token)
        .service(devices::create)
        .service(devices::list)
        .service(devices::delete)
        .service(devices::rotate_key)
        .service(admin::revoke_user)
        .service(admin::stats)
        .service(admin::create_api_key)
        .service(admin::list_api_keys)
        .service(admin::revoke_api_key);
    cfg.service(publish::configure(api));
}

impl From<IdentityError> for ApiError {
    fn from(err: IdentityError) -> Self {
        use IdentityError as E;
        let message = err.to_string();
        match err {
            E::InvalidCredentials => ApiError::unauthorized("invalid_credentials", message),
            E::RateLimited { retry_after_secs } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
                    .with_header(header::RETRY_AFTER, retry_after_secs.to_string())
            }
            E::InvalidRefreshToken => ApiError::unauthorized("invalid_refresh_token", message),
            E::RefreshTokenReused => ApiError::unauthorized("refresh_token_reused", message),
            E::InvalidDeviceCredentials => {
                ApiError::unauthorized("invalid_device_credentials", message)
            }
            E::DeviceNotFound => ApiError::not_found("device_not_found", message),
            E::UserNotFound => ApiError::not_found("user_not_found", message),
            E::InvalidApiKey => ApiError::unauthorized("invalid_api_key", message),
            E::ApiKeyNotFound => ApiError::not_found("api_key_not_found", message),
            E::UsernameTaken => ApiError::new(StatusCode::CONFLICT, "username_taken", message),
            E::Forbidden(_) => ApiError::forbidden("forbidden", message),
            E::DeviceLimit(_) => {
                ApiError::new(StatusCode::CONFLICT, "device_limit_reached", message)
            }
            E::Invalid { .. } => ApiError::bad_request("invalid_request", message),
            E::NotRevocable => ApiError::bad_request("not_revocable", message),
            E::Revoked => ApiError::forbidden("revoked", message),
            E::NoMessageKey => ApiError::bad_request("no_message_key", message),
            E::MessageKeyNotClaimable => ApiError::forbidden("message_key_not_claimable", message),
            E::MessageKeyClaimed => {
                ApiError::new(StatusCode::CONFLICT, "message_key_claimed", message)
            }
            E::MessageKeyClaimsFull => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
                    .with_header(header::RETRY_AFTER, "60")
            }
            E::Hashing(HashingError::Busy) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
                    .with_header(header::RETRY_AFTER, "1")
            }
            E::Store(ref store) | E::Revocation(RevocationError::Persist(ref store))
                if store.is_unavailable() =>
            {
                // The cause (which names the database host) goes to the log only.
                tracing::warn!(error = %err, "the store is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the identity store is unavailable; retry shortly".to_string(),
                )
                .with_header(header::RETRY_AFTER, "1")
            }
            E::Store(_) | E::Revocation(_) | E::Signing(_) | E::Hashing(_) | E::Setup(_) => {
                ApiError::internal(err)
            }
        }
    }
}
