//! Why a hub request (negotiate, a transport, a send, a refresh) is refused: one variant per
//! answer, with its status and `error` code in one table ([`TransportError::api_error`]).
//! The texts are the `message` clients read.

use crate::auth::RequestAuthError;
use crate::connection::{RefreshError, TransportKind};
use crate::http::ApiError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The token: missing, malformed, invalid or revoked, or two different ones.
    #[error(transparent)]
    Auth(#[from] RequestAuthError),
    #[error("this origin may not connect to the hub")]
    OriginNotAllowed,
    #[error("there is no hub named '{0}'")]
    UnknownHub(String),
    #[error("the {0} transport is disabled on this server")]
    TransportDisabled(TransportKind),
    #[error("this connection uses {0}; a connection cannot change transports")]
    TransportMismatch(TransportKind),
    #[error("the server is at its connection limit; try again later")]
    TooManyConnections,
    #[error(
        "this user already holds {0} connections (negotiated or connected); \
         close one before opening another"
    )]
    TooManyUserConnections(usize),
    /// A transport request on a connection whose `id` is missing. Refresh answers
    /// [`Self::MissingConnectionToken`] instead: both codes are documented and tested.
    #[error("the `id` query parameter (the connection token from negotiate) is required")]
    MissingConnectionId,
    #[error("the `id` query parameter is required")]
    MissingConnectionToken,
    #[error("no connection with this id")]
    UnknownConnection,
    /// A transport request whose token names another user: the connection is closed.
    #[error("the token belongs to another user than the connection")]
    UserMismatch,
    /// An in-band refresh refused: the same texts as the `RefreshToken` hub method's.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// Another transport or send (named) is in progress on the connection.
    #[error("another {0} is already in progress on this connection")]
    InUse(&'static str),
    #[error("POST requests are not allowed for WebSocket connections")]
    PostNotAllowed,
    #[error("only long-polling connections are ended with DELETE")]
    DeleteNotSupported,
    #[error("the request body could not be read")]
    InvalidBody,
    #[error("a send carries at most {0} bytes")]
    PayloadTooLarge(usize),
    /// The upgrade request is not a valid WebSocket handshake (actix-ws says why).
    #[error("{0}")]
    WebSocketHandshake(String),
    /// The connection lives on another node of the cluster, and Redis, which reaches it, is
    /// unavailable.
    #[error("the connection is held by another node, which cannot be reached while the cluster's Redis is unavailable; try again later")]
    ClusterUnavailable,
    /// The user's requests forwarded to other nodes and waiting, at the limit (named).
    #[error("this user already has {0} requests waiting for other nodes; try again shortly")]
    TooManyForwarded(usize),
}

impl TransportError {
    /// The token was refused after it was found (did not verify, revoked, or revoked while
    /// the connection was being registered).
    pub fn invalid_token() -> Self {
        Self::Auth(RequestAuthError::Invalid)
    }

    /// The answer on the wire: status, `error` code and message.
    fn api_error(&self) -> ApiError {
        let (status, code) = match self {
            Self::Auth(auth) => return auth.clone().into(),
            Self::Refresh(refused) => match refused {
                // A 401 carries its `WWW-Authenticate` challenge.
                RefreshError::InvalidToken | RefreshError::Revoked => {
                    return ApiError::unauthorized(refused.code(), self.to_string())
                }
                RefreshError::UserMismatch => (StatusCode::FORBIDDEN, refused.code()),
                RefreshError::UnknownConnection | RefreshError::Closed => {
                    (StatusCode::NOT_FOUND, refused.code())
                }
                RefreshError::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, refused.code()),
            },
            Self::OriginNotAllowed => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            Self::UnknownHub(_) => (StatusCode::NOT_FOUND, "unknown_hub"),
            Self::TransportDisabled(_) => (StatusCode::NOT_FOUND, "transport_disabled"),
            Self::TransportMismatch(_) => (StatusCode::BAD_REQUEST, "transport_mismatch"),
            Self::TooManyConnections => (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections"),
            Self::TooManyUserConnections(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_user_connections")
            }
            Self::MissingConnectionId => (StatusCode::BAD_REQUEST, "missing_connection_id"),
            Self::MissingConnectionToken => (StatusCode::BAD_REQUEST, "missing_connection_token"),
            Self::UnknownConnection => (StatusCode::NOT_FOUND, "unknown_connection"),
            Self::UserMismatch => (StatusCode::FORBIDDEN, "user_mismatch"),
            Self::InUse(_) => (StatusCode::CONFLICT, "transport_in_use"),
            Self::PostNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "post_not_allowed"),
            Self::DeleteNotSupported => (StatusCode::BAD_REQUEST, "delete_not_supported"),
            Self::InvalidBody => (StatusCode::BAD_REQUEST, "invalid_body"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::WebSocketHandshake(_) => (StatusCode::BAD_REQUEST, "websocket_handshake"),
            Self::ClusterUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
            Self::TooManyForwarded(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_forwarded_requests")
            }
        };
        let error = ApiError::new(status, code, self.to_string());
        match self.retry_after() {
            Some(secs) => error.with_header(header::RETRY_AFTER, secs),
            None => error,
        }
    }

    /// `Retry-After` (seconds) of every 503 and 429: 1 where what is missing comes back by
    /// itself within about a second (Redis and the revocation feed are retried every half
    /// second, a forwarded request ends), 5 where a client must leave first (a connection
    /// closes, or a negotiated one expires after `hub.negotiate_timeout_secs`), so that a crowd
    /// of clients does not retry every second.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            Self::Refresh(RefreshError::StoreUnavailable)
            | Self::ClusterUnavailable
            | Self::TooManyForwarded(_) => Some("1"),
            Self::TooManyConnections | Self::TooManyUserConnections(_) => Some("5"),
            _ => None,
        }
    }
}

impl From<TransportError> for ApiError {
    fn from(err: TransportError) -> Self {
        err.api_error()
    }
}

impl ResponseError for TransportError {
    fn status_code(&self) -> StatusCode {
        self.api_error().status
    }

    fn error_response(&self) -> HttpResponse {
        self.api_error().error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes, statuses and texts clients and tests rely on.
    #[test]
    fn every_refusal_keeps_its_status_code_and_text() {
        use TransportError as E;
        let cases = [
            (
                E::invalid_token(),
                401,
                "invalid_token",
                "the token is not valid",
            ),
            (
                E::Auth(RequestAuthError::Missing),
                401,
                "missing_token",
                "a bearer token is required",
            ),
            (
                E::OriginNotAllowed,
                403,
                "origin_not_allowed",
                "this origin may not connect to the hub",
            ),
            (
                E::UnknownHub("nope".into()),
                404,
                "unknown_hub",
                "there is no hub named 'nope'",
            ),
            (
                E::TransportDisabled(TransportKind::WebSockets),
                404,
                "transport_disabled",
                "the WebSockets transport is disabled on this server",
            ),
            (
                E::TransportMismatch(TransportKind::LongPolling),
                400,
                "transport_mismatch",
                "this connection uses LongPolling; a connection cannot change transports",
            ),
            (
                E::TooManyConnections,
                503,
                "too_many_connections",
                "the server is at its connection limit; try again later",
            ),
            (
                E::TooManyUserConnections(3),
                429,
                "too_many_user_connections",
                "this user already holds 3 connections (negotiated or connected); \
                 close one before opening another",
            ),
            (
                E::MissingConnectionId,
                400,
                "missing_connection_id",
                "the `id` query parameter (the connection token from negotiate) is required",
            ),
            (
                E::MissingConnectionToken,
                400,
                "missing_connection_token",
                "the `id` query parameter is required",
            ),
            (
                E::UnknownConnection,
                404,
                "unknown_connection",
                "no connection with this id",
            ),
            (
                E::UserMismatch,
                403,
                "user_mismatch",
                "the token belongs to another user than the connection",
            ),
            (
                E::Refresh(RefreshError::InvalidToken),
                401,
                "invalid_token",
                "the new token is not valid",
            ),
            (
                E::Refresh(RefreshError::UserMismatch),
                403,
                "user_mismatch",
                "the new token belongs to another user than the connection",
            ),
            (
                E::Refresh(RefreshError::Revoked),
                401,
                "invalid_token",
                "the new token was revoked; the connection is closed",
            ),
            (
                E::Refresh(RefreshError::UnknownConnection),
                404,
                "unknown_connection",
                "no connection with this id",
            ),
            (
                E::Refresh(RefreshError::Closed),
                404,
                "unknown_connection",
                "the connection is closed",
            ),
            (
                E::Refresh(RefreshError::StoreUnavailable),
                503,
                "store_unavailable",
                "the new token could not be checked against revocations; try again later",
            ),
            (
                E::InUse("send"),
                409,
                "transport_in_use",
                "another send is already in progress on this connection",
            ),
            (
                E::PostNotAllowed,
                405,
                "post_not_allowed",
                "POST requests are not allowed for WebSocket connections",
            ),
            (
                E::DeleteNotSupported,
                400,
                "delete_not_supported",
                "only long-polling connections are ended with DELETE",
            ),
            (
                E::InvalidBody,
                400,
                "invalid_body",
                "the request body could not be read",
            ),
            (
                E::PayloadTooLarge(10),
                413,
                "payload_too_large",
                "a send carries at most 10 bytes",
            ),
            (
                E::Auth(RequestAuthError::StoreUnavailable),
                503,
                "store_unavailable",
                "the token could not be checked against revocations; try again later",
            ),
            (
                E::ClusterUnavailable,
                503,
                "cluster_unavailable",
                "the connection is held by another node, which cannot be reached while the \
                 cluster's Redis is unavailable; try again later",
            ),
            (
                E::TooManyForwarded(256),
                429,
                "too_many_forwarded_requests",
                "this user already has 256 requests waiting for other nodes; try again shortly",
            ),
        ];
        for (err, status, code, message) in cases {
            let api = ApiError::from(err.clone());
            assert_eq!(
                (api.status.as_u16(), api.code, api.message.as_str()),
                (status, code, message),
                "{err:?}"
            );
            assert_eq!(err.status_code().as_u16(), status);
            let challenged = api
                .headers
                .iter()
                .any(|(name, _)| name == actix_web::http::header::WWW_AUTHENTICATE);
            assert_eq!(challenged, status == 401, "{err:?}");
            let waits = api
                .headers
                .iter()
                .any(|(name, _)| name == header::RETRY_AFTER);
            assert_eq!(waits, status == 503 || status == 429, "{err:?}");
        }
    }
}
