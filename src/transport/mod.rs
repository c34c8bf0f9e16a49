//! Transports adapt HTTP to a [`Connection`]: negotiate creates it, a transport attaches to it
//! and moves bytes between the network and the hub session. Every transport goes through
//! [`open_session`], so authentication, the session loop and cleanup exist once.

mod cors;
mod negotiate;
mod refresh;
mod websocket;

pub use cors::check_origin;

use crate::auth::{token_from_request, Principal};
use crate::connection::{CloseReason, Connection};
use crate::http::ApiError;
use crate::hub::{run_session, Hub, Inbound};
use crate::startup::AppState;
use actix_web::dev::Extensions;
use actix_web::{web, HttpRequest};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Frames buffered between a transport's reader and the hub session.
const INBOUND_BUFFER: usize = 16;

/// Registers the hub routes: negotiate, the transports, and their CORS preflights.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/hubs/{hub}/negotiate")
            .route(web::post().to(negotiate::negotiate))
            .route(web::method(actix_web::http::Method::OPTIONS).to(cors::preflight)),
    )
    .service(
        web::resource("/hubs/{hub}/refresh")
            .route(web::post().to(refresh::refresh))
            .route(web::method(actix_web::http::Method::OPTIONS).to(cors::preflight)),
    )
    .service(
        web::resource("/hubs/{hub}")
            .route(web::get().to(websocket::connect))
            .route(web::method(actix_web::http::Method::OPTIONS).to(cors::preflight)),
    );
}

/// Sets up every accepted socket so that a peer that stops taking data is dropped: once sent
/// bytes stay unacknowledged (a full receive window included) for `timeout`, the kernel aborts
/// the connection. Without this, a write to a client that never reads waits forever, and a
/// slow consumer closed by the hub would keep its socket and buffers (`TCP_USER_TIMEOUT`).
pub fn drop_stalled_peers(
    timeout: Duration,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |io, _| {
        #[cfg(target_os = "linux")]
        if let Some(tcp) = io.downcast_ref::<actix_web::rt::net::TcpStream>() {
            if let Err(err) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout)) {
                tracing::warn!(error = %err, "cannot set TCP_USER_TIMEOUT on a connection");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (io, timeout);
    }
}

/// The hub named in the path, or 404.
fn find_hub(state: &AppState, name: &str) -> Result<Arc<Hub>, ApiError> {
    state.hubs.get(name).cloned().ok_or_else(|| {
        ApiError::not_found("unknown_hub", format!("there is no hub named '{name}'"))
    })
}

/// Authenticates a hub request: a valid, unrevoked token from the header or `access_token`.
async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    let (token, _) = token_from_request(req)?
        .ok_or_else(|| ApiError::unauthorized("missing_token", "a bearer token is required"))?;
    state.auth.authenticate(&token).await.map_err(|err| {
        tracing::debug!(reason = err.code(), "hub request refused");
        ApiError::unauthorized("invalid_token", "the token is not valid")
    })
}

/// A new connection for `principal`, registered and ready for a transport.
fn create_connection(
    state: &AppState,
    hub: &Hub,
    principal: Principal,
    legacy_token: bool,
) -> Result<Arc<Connection>, ApiError> {
    let id = crate::auth::issue::random_id();
    let token = if legacy_token {
        id.clone()
    } else {
        crate::auth::issue::random_id()
    };
    let connection = Connection::new(
        id,
        token,
        hub.name.clone(),
        principal,
        state.settings.hub.outbound_queue_messages,
        &state.shutdown,
    );
    state.connections.insert(connection.clone()).map_err(|_| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the server is at its connection limit; try again later",
        )
    })?;
    Ok(connection)
}

/// The negotiated connection named by `id`, checked against the caller: 404 if unknown,
/// 403 (and the connection closed) if the token belongs to someone else.
fn existing_connection(
    state: &AppState,
    hub: &Hub,
    token: &str,
    principal: &Principal,
) -> Result<Arc<Connection>, ApiError> {
    let connection = state
        .connections
        .get(token)
        .filter(|c| *c.hub == *hub.name)
        .ok_or_else(|| ApiError::not_found("unknown_connection", "no connection with this id"))?;
    if connection.principal().sub != principal.sub {
        connection.close(CloseReason::TokenMismatch);
        state.connections.remove(&connection.token);
        return Err(ApiError::forbidden(
            "user_mismatch",
            "the token belongs to another user than the connection",
        ));
    }
    Ok(connection)
}

/// Runs the hub session for an attached transport, then cleans up once: the connection is
/// closed with the session's reason and leaves the registry.
fn open_session(
    state: &AppState,
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    text_only: bool,
) -> mpsc::Sender<Inbound> {
    let (tx, rx) = mpsc::channel(INBOUND_BUFFER);
    let limits = state.limits.clone();
    let connections = state.connections.clone();
    let stats = state.close_stats.clone();
    let task = async move {
        let reason = run_session(hub, connection.clone(), rx, limits, text_only).await;
        tracing::debug!(connection = %connection.id, reason = reason.code(), "hub session ended");
        connection.close(reason);
        // The first reason wins: a revocation that raced the session's own end is reported.
        let reason = connection
            .close_reason()
            .cloned()
            .unwrap_or(CloseReason::Shutdown);
        stats.record(&reason, &connection.id, &connection.principal().sub);
        connections.remove(&connection.token);
    };
    actix_web::rt::spawn(state.tasks.track_future(task));
    tx
}

/// Drops a negotiated connection that no transport picked up in time.
fn expire_unattached(state: &AppState, connection: Arc<Connection>) {
    let timeout = std::time::Duration::from_secs(state.settings.hub.negotiate_timeout_secs);
    let connections = state.connections.clone();
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            // Closed before a transport came: shutdown, or a token of another user.
            _ = connection.closed() => {}
        }
        // An attached connection leaves the registry when its session ends.
        if !connection.is_attached() {
            connection.close(CloseReason::ClientClosed);
            connections.remove(&connection.token);
        }
    });
}
