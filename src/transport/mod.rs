//! Transports adapt HTTP to a [`Connection`]: negotiate creates it, a transport attaches to it
//! and moves bytes between the network and the hub session (TransportProtocols.md).
//!
//! | request | what it is |
//! | --- | --- |
//! | `POST /hubs/{hub}/negotiate` | creates a connection ([`negotiate`]) |
//! | `GET /hubs/{hub}` with a WebSocket upgrade | WebSockets, full duplex ([`websocket`]) |
//! | `GET /hubs/{hub}?id=` with `Accept: text/event-stream` | Server-Sent Events, server to client ([`sse`]) |
//! | any other `GET /hubs/{hub}?id=` | a long poll, server to client ([`long_polling`]) |
//! | `POST /hubs/{hub}?id=` | client to server for SSE and long polling ([`send`]) |
//! | `DELETE /hubs/{hub}?id=` | ends a long-polling connection ([`long_polling`]) |
//! | `POST /hubs/{hub}/refresh?id=` | moves a connection onto a fresh token ([`refresh`]) |
//!
//! Every transport request is authenticated like negotiate and checked against the
//! connection's user ([`connection_request`]); every transport starts or resumes the one hub
//! session through [`begin`]; what a transport writes comes from the connection's
//! [`Attachment`], so replay, flushing and the Close message exist once. The handlers read
//! [`HubEndpoints`], the narrow state `startup` registers for them.

mod cors;
mod endpoints;
mod error;
mod forward;
mod long_polling;
mod negotiate;
mod owner;
mod refresh;
mod send;
mod sse;
mod tunnel;
mod websocket;

pub use cors::check_origin;
pub use endpoints::HubEndpoints;
pub use error::TransportError;
pub use owner::ForwardedRequests;
pub use websocket::WebSocketUpgrade;

use crate::auth::{
    authenticate_request, authenticate_token, bearer_token, issue::unix_now, query_param,
    Principal, RequestAuthError, TokenDigest, TokenPolicy,
};
use crate::connection::{
    carry_on, supervise, Attachment, CloseReason, Connection, Inbound, InboundReceiver,
    RefreshError, RegistryFull, Timeouts, TransportKind,
};
use crate::hub::{run_session, Hub};
use crate::settings::TransportSettings;
use actix_web::dev::Extensions;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// Several queued messages are written as one WebSocket frame, SSE event or poll response, up
/// to about this many bytes. Not a setting: it limits nothing a client sends (a single larger
/// message still goes out whole), it only trades syscalls for latency, and 64 KiB is past the
/// point where larger batches save anything measurable.
const COALESCE_BYTES: usize = 64 * 1024;

/// Incoming messages one WebSocket frame or `POST` body may carry at the largest message size
/// (clients batch what they send while a request is in flight). Not a setting of its own: the
/// operator's bound is `hub.max_message_bytes`, and this ties the frame limit to it so the
/// two cannot be set inconsistently (a frame limit below the message limit would refuse
/// legal messages).
const MESSAGES_PER_FRAME: usize = 4;

/// The largest WebSocket frame or `POST` body accepted: several messages may share one, and
/// never less than what the server itself coalesces.
fn max_frame_bytes(state: &HubEndpoints) -> usize {
    state
        .settings
        .hub
        .max_message_bytes
        .saturating_mul(MESSAGES_PER_FRAME)
        .max(COALESCE_BYTES)
}

/// Registers the hub routes: negotiate, the transports, and their CORS preflights.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/hubs/{hub}/negotiate")
            .route(web::post().to(negotiate::negotiate))
            .route(web::method(Method::OPTIONS).to(cors::preflight)),
    )
    .service(
        web::resource("/hubs/{hub}/refresh")
            .route(web::post().to(refresh::refresh))
            .route(web::method(Method::OPTIONS).to(cors::preflight)),
    )
    .service(
        web::resource("/hubs/{hub}")
            .route(web::get().to(get))
            .route(web::post().to(send::send))
            .route(web::delete().to(long_polling::delete))
            .route(web::method(Method::OPTIONS).to(cors::preflight)),
    );
}

/// `GET /hubs/{hub}`: a WebSocket upgrade, an SSE stream or a long poll.
async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<HubEndpoints>,
) -> Result<HttpResponse, TransportError> {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        websocket::connect(req, path, state).await
    } else if accepts_event_stream(&req) {
        sse::connect(req, path, state).await
    } else {
        Ok(long_polling::poll(req, path, state).await)
    }
}

fn accepts_event_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
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
        let tcp = io
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .or_else(|| {
                io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>>()
                    .map(|tls| tls.get_ref().0)
            });
        if let Some(tcp) = tcp {
            if let Err(err) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout)) {
                tracing::warn!(error = %err, "cannot set TCP_USER_TIMEOUT on a connection");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (io, timeout);
    }
}

/// The hub named in the path, or 404.
fn find_hub(state: &HubEndpoints, name: &str) -> Result<Arc<Hub>, TransportError> {
    state
        .hubs
        .get(name)
        .cloned()
        .ok_or_else(|| TransportError::UnknownHub(name.to_string()))
}

/// Whether the configuration offers `kind`.
fn is_enabled(settings: &TransportSettings, kind: TransportKind) -> bool {
    match kind {
        TransportKind::WebSockets => settings.websockets,
        TransportKind::ServerSentEvents => settings.server_sent_events,
        TransportKind::LongPolling => settings.long_polling,
    }
}

/// Fixes the transport of `connection` to `kind`: 404 if the configuration disables it (as
/// ASP.NET Core answers), 400 if the connection already uses another one.
fn use_transport(
    state: &HubEndpoints,
    connection: &Connection,
    kind: TransportKind,
) -> Result<(), TransportError> {
    if !is_enabled(&state.settings.transports, kind) {
        return Err(TransportError::TransportDisabled(kind));
    }
    connection
        .set_transport(kind)
        .map_err(TransportError::TransportMismatch)
}

/// 401 for a connection whose token was revoked while it was being registered.
fn revoked_while_connecting() -> TransportError {
    TransportError::invalid_token()
}

/// Who opens a WebSocket. When the upgrade names a connection of this node and carries the very
/// token negotiate verified for it (same SHA-256, compared in constant time), that token is not
/// verified again: its signature, issuer, audience and key were checked at negotiate and cannot
/// have changed; what can change, its expiry and its revocation, is checked again
/// ([`crate::auth::Authenticator::recheck`]). Any other token (another user's, a refreshed
/// one, a connection of another node, no `id`) is verified in full, as on every request.
/// Shared, not copied: the negotiated connection's principal is only compared with.
async fn upgrade_principal(
    req: &HttpRequest,
    state: &HubEndpoints,
) -> Result<Arc<Principal>, TransportError> {
    let token = bearer_token(req, &state.auth)?;
    let negotiated = query_param(req.query_string(), "id")
        .and_then(|id| state.connections.get(&id))
        .and_then(|connection| connection.opened_by(&TokenDigest::of(&token)));
    match negotiated {
        Some(principal) => {
            state
                .auth
                .recheck(&principal)
                .await
                .map_err(RequestAuthError::refused)?;
            Ok(principal)
        }
        None => Ok(Arc::new(
            authenticate_token(&token, &state.auth, TokenPolicy::Current).await?,
        )),
    }
}

/// A new connection for `principal`, registered, supervised and ready for a transport.
/// Its token is checked once more after the insert (see [`crate::connection::admit`]).
/// `opening` is the digest of the token that proved `principal`, kept for the upgrade
/// ([`upgrade_principal`]).
async fn create_connection(
    state: &HubEndpoints,
    hub: &Hub,
    principal: Principal,
    opening: Option<TokenDigest>,
    legacy_token: bool,
) -> Result<Arc<Connection>, TransportError> {
    let id = match &state.settings.cluster.redis_url {
        // The id names its node, so a send to it from another node goes to this node's channel.
        Some(_) => node_scoped_id(state),
        None => crate::auth::issue::random_id(),
    };
    let token = match (&state.settings.cluster.redis_url, legacy_token) {
        (_, true) => id.clone(),
        // The token names its node too: any node can tell where it was negotiated.
        (Some(_), false) => node_scoped_id(state),
        (None, false) => crate::auth::issue::random_id(),
    };
    let connection = Connection::new(
        id,
        token,
        hub.name.clone(),
        principal,
        state.settings.hub.outbound_queue_messages,
        &state.shutdown,
    );
    if let Some(digest) = opening {
        connection.remember_opening_token(digest);
    }
    register(state, connection.clone(), None).await?;
    Ok(connection)
}

/// `{node id}.{random}`: a random id (full entropy) that names this node.
fn node_scoped_id(state: &HubEndpoints) -> String {
    format!(
        "{}.{}",
        state.settings.cluster.node_id,
        crate::auth::issue::random_id()
    )
}

/// Registers `connection`, checks its token once more after the insert, and starts its
/// supervisor, which holds `released` (if any) until the connection leaves the registry.
async fn register(
    state: &HubEndpoints,
    connection: Arc<Connection>,
    released: Option<tokio_util::sync::DropGuard>,
) -> Result<(), TransportError> {
    state
        .connections
        .insert(connection.clone())
        .inspect_err(|full| {
            state.metrics.rate_limited(match full {
                RegistryFull::Server => "connections",
                RegistryFull::Principal => "user_connections",
            })
        })
        .map_err(|full| match full {
            RegistryFull::Server => TransportError::TooManyConnections,
            RegistryFull::Principal => {
                TransportError::TooManyUserConnections(state.settings.hub.max_connections_per_user)
            }
        })?;
    if !crate::connection::admit(&state.auth, &connection).await {
        state.connections.remove(&connection.token);
        return Err(revoked_while_connecting());
    }
    let timeouts = Timeouts {
        negotiate: Duration::from_secs(state.settings.hub.negotiate_timeout_secs),
        disconnect: Duration::from_secs(state.settings.transports.disconnect_timeout_secs),
    };
    let supervisor = supervise(
        connection,
        state.connections.clone(),
        timeouts,
        state.shutdown.clone(),
    );
    let supervisor = async move {
        supervisor.await;
        drop(released);
    };
    actix_web::rt::spawn(state.tasks.track_future(supervisor));
    Ok(())
}

/// The negotiated connection named by `id`, checked against the caller: 404 if unknown,
/// 403 (and the connection closed) if the token belongs to someone else. A token of the same
/// user that expires later extends the connection's life: the connection carries on under it
/// (its expiry and roles), as after an in-band refresh.
async fn existing_connection(
    state: &HubEndpoints,
    hub: &Hub,
    token: &str,
    principal: &Principal,
) -> Result<Arc<Connection>, TransportError> {
    let connection = state
        .connections
        .get(token)
        .filter(|c| *c.hub == *hub.name)
        .ok_or_else(unknown_connection)?;
    if connection.principal().sub != principal.sub {
        connection.close(CloseReason::TokenMismatch);
        state.connections.remove(&connection.token);
        return Err(TransportError::UserMismatch);
    }
    if principal.expires_at > connection.expires_at() {
        match carry_on(
            &state.auth,
            &state.connections,
            &connection,
            principal.clone(),
        )
        .await
        {
            Ok(_) => {
                tracing::debug!(connection = %connection.log_id(), expires_at = principal.expires_at, "connection moved onto a later token");
            }
            Err(RefreshError::Revoked) => return Err(revoked_while_connecting()),
            // Closed meanwhile: the transport finds it closed.
            Err(_) => {}
        }
    }
    Ok(connection)
}

fn unknown_connection() -> TransportError {
    TransportError::UnknownConnection
}

/// A request on an existing connection (SSE, poll, send, delete), authenticated and checked.
struct ConnectionRequest {
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    origin: Option<HeaderValue>,
}

/// Where a request on a connection goes: this node holds the connection, or another node of
/// the cluster does (see [`forward`]).
enum Addressed {
    Local(ConnectionRequest),
    Remote(Box<forward::RemoteRequest>),
}

/// What every request on an existing connection checks first, in order: the origin (403),
/// the hub (404), the token (401), the `id` parameter (400), the connection (404) and its
/// user (403).
///
/// The token must verify and be unrevoked like negotiate's, with one allowance: its `exp` may
/// have passed if it is the token the connection was opened with (same `jti`) and the
/// connection itself holds a later, unexpired token of the same user (after an in-band
/// refresh): [`TokenPolicy::ExpiredIf`] with [`expired_token_allowed`]. The official clients
/// send their negotiate-time token on every long-polling and SSE request for the life of the
/// connection, so without it a refreshed connection would fail at its first token's expiry;
/// what bounds trust is the connection's own token, whose expiry the session enforces.
/// For a connection another node holds, that node applies the allowance.
async fn connection_request(
    req: &HttpRequest,
    hub: &str,
    state: &HubEndpoints,
) -> Result<Addressed, TransportError> {
    let origin = check_origin(req, &state.settings.server)?;
    let hub = find_hub(state, hub)?;
    let id = query_param(req.query_string(), "id");
    // Without an `id` the request is refused just below (400), whatever its token's `exp`.
    let accept_expired = |principal: &Principal| {
        id.as_deref().is_none_or(|token| {
            forward::held_elsewhere(state, token) || expired_token_allowed(state, token, principal)
        })
    };
    let policy = TokenPolicy::ExpiredIf(&accept_expired);
    let principal = authenticate_request(req, &state.auth, policy).await?;
    let token = id.ok_or(TransportError::MissingConnectionId)?;
    if forward::held_elsewhere(state, &token) {
        let remote = forward::locate(state, hub, token, principal, origin).await?;
        return Ok(Addressed::Remote(Box::new(remote)));
    }
    let connection = existing_connection(state, &hub, &token, &principal).await?;
    Ok(Addressed::Local(ConnectionRequest {
        hub,
        connection,
        origin,
    }))
}

/// Whether the expired token proving `principal` may still be used on the connection `token`
/// names: only the very token the connection was opened with (the one official clients keep
/// sending), only for its own user, and only while the connection holds a later token.
fn expired_token_allowed(state: &HubEndpoints, token: &str, principal: &Principal) -> bool {
    let leeway = i64::try_from(state.settings.jwt.leeway_secs).unwrap_or(i64::MAX);
    state.connections.get(token).is_some_and(|c| {
        c.opened_with(principal.jti.as_deref())
            && c.principal().sub == principal.sub
            && c.expires_at().saturating_add(leeway) > unix_now()
    })
}

/// 409: another transport or send is in progress on the connection.
fn conflict(what: &'static str) -> TransportError {
    TransportError::InUse(what)
}

/// A transport attached: the connection's first one starts its hub session (and `begin` returns
/// true); one that resumes after a drop tells the session, before any frame of the new transport
/// reaches it.
async fn begin(state: &HubEndpoints, hub: Arc<Hub>, attachment: &Attachment) -> bool {
    let connection = attachment.connection();
    if let Some(inbound) = connection.take_inbound() {
        open_session(state, hub, connection.clone(), inbound);
        return true;
    }
    if attachment.is_resumed() {
        tracing::debug!(connection = %connection.log_id(), "transport resumed");
        // Fails only when the connection closed meanwhile; the transport then sees it too.
        let _ = connection.receive(Inbound::Resumed).await;
    }
    false
}

/// Runs the hub session of a connection, then closes the connection with the session's reason.
/// Leaving the registry is [`supervise`]'s part.
fn open_session(
    state: &HubEndpoints,
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    inbound: InboundReceiver,
) {
    let text_only = connection.transport() == Some(TransportKind::ServerSentEvents);
    let limits = state.limits.clone();
    let stats = state.close_stats.clone();
    let task = async move {
        let reason = run_session(hub, connection.clone(), inbound, limits, text_only).await;
        tracing::debug!(connection = %connection.log_id(), reason = reason.code(), "hub session ended");
        connection.close(reason);
        // The first reason wins: a revocation that raced the session's own end is reported.
        let reason = connection
            .close_reason()
            .cloned()
            .unwrap_or(CloseReason::Shutdown);
        stats.record(&reason, connection.log_id(), &connection.principal().sub);
    };
    actix_web::rt::spawn(state.tasks.track_future(task));
}

/// Headers that keep proxies and browsers from caching long-poll answers (ASP.NET Core's).
fn no_cache(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
}
