//! The publish API, `/api/hubs/{hub}/...`: a backend sends to a hub's clients (all, a user, a
//! group, a connection), manages group membership, disconnects a user and asks for a user's
//! presence, in the shapes of Azure SignalR Service's data-plane REST API. Everything goes
//! through the hub's lifetime manager, so on a cluster node a call reaches every node.
//!
//! Each call is authenticated ([`ServerCaller`]), checked against the caller's scopes, audited
//! (event `publish`) and counted (`signet_publish_api_calls`) in one place, [`publish`].

use super::server_caller::ServerCaller;
use crate::auth::Authenticator;
use crate::http::{client_addr, ApiError, Json};
use crate::hub::{Clients, Hub, HubCatalog, LifetimeError};
use crate::identity::{IdentityService, PublishAction};
use crate::metrics::Metrics;
use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{delete, post, put, route, web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;

/// Longest user id, group name, connection id or hub name in a path, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Longest `target` (the client method a send invokes), in bytes.
const MAX_TARGET_BYTES: usize = 256;

/// What the publish API needs, registered once at start-up.
#[derive(Clone)]
pub struct PublishApi {
    pub hubs: Arc<HubCatalog>,
    pub metrics: Metrics,
}

/// Registers the publish routes (inside the `/api` scope).
pub fn configure(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .service(send_all)
        .service(send_user)
        .service(send_group)
        .service(send_connection)
        .service(add_connection_to_group)
        .service(remove_connection_from_group)
        .service(add_user_to_group)
        .service(remove_user_from_group)
        .service(disconnect_user)
        .service(presence)
}

/// `{target, arguments, excluded}`: the client method to invoke with its arguments;
/// `excluded` (connection ids) only for a send to all.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    target: String,
    #[serde(default)]
    arguments: Vec<Value>,
    #[serde(default)]
    excluded: Vec<String>,
}

/// One call as audited: which route, on which hub, to whom.
struct Route {
    name: &'static str,
    action: PublishAction,
    hub: String,
    to: String,
}

impl Route {
    fn new(name: &'static str, action: PublishAction, hub: &str, to: &str) -> Self {
        Self {
            name,
            action,
            hub: hub.to_string(),
            to: to.to_string(),
        }
    }

    /// `text` as the audit event shows it: at most [`MAX_NAME_BYTES`], so an unauthenticated
    /// request cannot write a long path into the audit log (longer names are refused anyway).
    fn audited(text: &str) -> &str {
        let mut end = text.len().min(MAX_NAME_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    }
}

/// Authenticates, authorizes and runs `work` on the hub, then audits and counts the outcome.
async fn publish<F, Fut>(req: &HttpRequest, route: Route, work: F) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Arc<Hub>) -> Fut,
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    let (Some(api), Some(auth), Some(identity)) = (
        req.app_data::<web::Data<PublishApi>>(),
        req.app_data::<web::Data<Authenticator>>(),
        req.app_data::<web::Data<IdentityService>>(),
    ) else {
        return Err(ApiError::internal("the publish API is not configured"));
    };
    let caller = ServerCaller::authenticate(req, auth, identity.api_keys()).await;
    let result = match &caller {
        Ok(caller) => authorized(caller, &api.hubs, &route, work).await,
        Err(err) => Err(err.clone()),
    };
    let status = result.as_ref().map_or_else(|e| e.status, |r| r.status());
    let outcome = outcome(status);
    api.metrics.publish_call(route.action.as_str(), outcome);
    let caller = caller.map_or_else(|_| "unauthenticated".to_string(), |c| c.label());
    tracing::info!(target: "audit", event = "publish", outcome, route = route.name,
        hub = %Route::audited(&route.hub), to = %Route::audited(&route.to), caller = %caller, status = status.as_u16(),
        client = %crate::identity::client_label(client_addr(req)), "publish API call");
    result
}

async fn authorized<F, Fut>(
    caller: &ServerCaller,
    hubs: &HubCatalog,
    route: &Route,
    work: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Arc<Hub>) -> Fut,
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    caller.authorize(&route.hub, route.action)?;
    let hub = hubs
        .get(&route.hub)
        .cloned()
        .ok_or_else(|| ApiError::not_found("hub_not_found", format!("no hub {}", route.hub)))?;
    work(hub).await
}

/// The metrics outcome of an answer's status.
fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        401 => "unauthorized",
        403 => "forbidden",
        400 | 413 | 415 => "invalid",
        404 => "not_found",
        409 => "conflict",
        503 => "unavailable",
        _ => "error",
    }
}

/// The body, parsed as every API body is (size-limited, 400 naming the field).
async fn body<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    mut payload: Payload,
) -> Result<T, ApiError> {
    Json::<T>::from_request(req, &mut payload)
        .await
        .map(|Json(body)| body)
}

/// 400 naming `field` unless `value` is 1 to `max` bytes.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`{field}`: must be 1 to {max} bytes"),
        ));
    }
    Ok(())
}

impl SendBody {
    async fn read(req: &HttpRequest, payload: Payload, to_all: bool) -> Result<Self, ApiError> {
        let body: Self = body(req, payload).await?;
        check_name("target", &body.target, MAX_TARGET_BYTES)?;
        if !to_all && !body.excluded.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`excluded`: only a send to all excludes connections",
            ));
        }
        Ok(body)
    }
}

impl From<LifetimeError> for ApiError {
    fn from(err: LifetimeError) -> Self {
        let message = err.to_string();
        match err {
            LifetimeError::UnknownConnection(_) => {
                ApiError::not_found("connection_not_found", message)
            }
            LifetimeError::TooManyGroups(_) => {
                ApiError::new(StatusCode::CONFLICT, "too_many_groups", message)
            }
            LifetimeError::Backplane(cause) => {
                tracing::warn!(error = %cause, "publish API: the backplane is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backplane_unavailable",
                    "the other nodes cannot be reached; retry shortly",
                )
                .with_header(header::RETRY_AFTER, "1")
            }
        }
    }
}

fn accepted() -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /api/hubs/{hub}/send` `{target, arguments, excluded?}` -> 202: to every connection.
#[post("/hubs/{hub}/send")]
async fn send_all(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let hub = path.into_inner();
    let route = Route::new("send_all", PublishAction::Send, &hub, "");
    let request = req.clone();
    publish(&req, route, |hub| async move {
        let body = SendBody::read(&request, payload.into_inner(), true).await?;
        Clients::new(hub.lifetime.clone())
            .all_except(&body.target, body.arguments, &body.excluded)
            .await?;
        accepted()
    })
    .await
}

/// `POST /api/hubs/{hub}/users/{sub}/send` -> 202: to every connection of the user.
#[post("/hubs/{hub}/users/{sub}/send")]
async fn send_user(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (hub, sub) = path.into_inner();
    let route = Route::new("send_user", PublishAction::Send, &hub, &sub);
    let request = req.clone();
    publish(&req, route, |hub| async move {
        check_name("user", &sub, MAX_NAME_BYTES)?;
        let body = SendBody::read(&request, payload.into_inner(), false).await?;
        Clients::new(hub.lifetime.clone())
            .user(&sub, &body.target, body.arguments)
            .await?;
        accepted()
    })
    .await
}

/// `POST /api/hubs/{hub}/groups/{group}/send` -> 202: to every member of the group.
#[post("/hubs/{hub}/groups/{group}/send")]
async fn send_group(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (hub, group) = path.into_inner();
    let route = Route::new("send_group", PublishAction::Send, &hub, &group);
    let request = req.clone();
    publish(&req, route, |hub| async move {
        check_name("group", &group, MAX_NAME_BYTES)?;
        let body = SendBody::read(&request, payload.into_inner(), false).await?;
        Clients::new(hub.lifetime.clone())
            .groups(std::slice::from_ref(&group), &body.target, body.arguments)
            .await?;
        accepted()
    })
    .await
}

/// `POST /api/hubs/{hub}/connections/{id}/send` -> 202: to one connection, wherever it is.
#[post("/hubs/{hub}/connections/{id}/send")]
async fn send_connection(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (hub, id) = path.into_inner();
    let route = Route::new("send_connection", PublishAction::Send, &hub, &id);
    let request = req.clone();
    publish(&req, route, |hub| async move {
        check_name("connectionId", &id, MAX_NAME_BYTES)?;
        let body = SendBody::read(&request, payload.into_inner(), false).await?;
        Clients::new(hub.lifetime.clone())
            .connection(&id, &body.target, body.arguments)
            .await?;
        accepted()
    })
    .await
}

/// `PUT /api/hubs/{hub}/groups/{group}/connections/{id}` -> 204; 404 `connection_not_found`;
/// 409 `too_many_groups`.
#[put("/hubs/{hub}/groups/{group}/connections/{id}")]
async fn add_connection_to_group(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group, id) = path.into_inner();
    let route = Route::new(
        "group_add_connection",
        PublishAction::Groups,
        &hub,
        &format!("group {group}, connection {id}"),
    );
    publish(&req, route, |hub| async move {
        check_name("group", &group, MAX_NAME_BYTES)?;
        hub.lifetime.add_to_group(&id, &group).await?;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// `DELETE /api/hubs/{hub}/groups/{group}/connections/{id}` -> 204.
#[delete("/hubs/{hub}/groups/{group}/connections/{id}")]
async fn remove_connection_from_group(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group, id) = path.into_inner();
    let route = Route::new(
        "group_remove_connection",
        PublishAction::Groups,
        &hub,
        &format!("group {group}, connection {id}"),
    );
    publish(&req, route, |hub| async move {
        hub.lifetime.remove_from_group(&id, &group).await?;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// Adds (or removes) every current connection of `sub` to `group`; how many changed.
/// Connections that left meanwhile, or that are in too many groups, are skipped.
async fn change_user_groups(
    hub: &Hub,
    sub: &str,
    group: &str,
    add: bool,
) -> Result<usize, ApiError> {
    let connections = hub.lifetime.connections_of(sub).await?;
    let changes = connections.iter().map(|c| async move {
        if add {
            hub.lifetime.add_to_group(&c.id, group).await
        } else {
            hub.lifetime.remove_from_group(&c.id, group).await
        }
    });
    let mut changed = 0;
    for result in futures_util::future::join_all(changes).await {
        match result {
            Ok(()) => changed += 1,
            Err(LifetimeError::Backplane(cause)) => {
                return Err(LifetimeError::Backplane(cause).into())
            }
            Err(_) => {}
        }
    }
    Ok(changed)
}

/// `PUT /api/hubs/{hub}/groups/{group}/users/{sub}` -> 200 `{connections}`: the user's current
/// connections join the group (later ones do not).
#[put("/hubs/{hub}/groups/{group}/users/{sub}")]
async fn add_user_to_group(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group, sub) = path.into_inner();
    let route = Route::new(
        "group_add_user",
        PublishAction::Groups,
        &hub,
        &format!("group {group}, user {sub}"),
    );
    publish(&req, route, |hub| async move {
        check_name("group", &group, MAX_NAME_BYTES)?;
        let changed = change_user_groups(&hub, &sub, &group, true).await?;
        Ok(HttpResponse::Ok().json(json!({ "connections": changed })))
    })
    .await
}

/// `DELETE /api/hubs/{hub}/groups/{group}/users/{sub}` -> 200 `{connections}`: the user's
/// current connections leave the group.
#[delete("/hubs/{hub}/groups/{group}/users/{sub}")]
async fn remove_user_from_group(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, group, sub) = path.into_inner();
    let route = Route::new(
        "group_remove_user",
        PublishAction::Groups,
        &hub,
        &format!("group {group}, user {sub}"),
    );
    publish(&req, route, |hub| async move {
        let changed = change_user_groups(&hub, &sub, &group, false).await?;
        Ok(HttpResponse::Ok().json(json!({ "connections": changed })))
    })
    .await
}

/// `DELETE /api/hubs/{hub}/users/{sub}/connections` -> 200 `{closed}`: closes every connection
/// of the user, on every node, hub and transport (`allowReconnect: false`).
#[delete("/hubs/{hub}/users/{sub}/connections")]
async fn disconnect_user(
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, sub) = path.into_inner();
    let route = Route::new("disconnect_user", PublishAction::Disconnect, &hub, &sub);
    publish(&req, route, |hub| async move {
        let closed = hub
            .lifetime
            .disconnect_user(&sub, crate::connection::CloseReason::Kicked)
            .await?;
        Ok(HttpResponse::Ok().json(json!({ "closed": closed })))
    })
    .await
}

/// `GET /api/hubs/{hub}/users/{sub}` -> 200 `{sub, online, connections: [ids]}`;
/// `HEAD` -> 200 when the user has a connection to the hub, 404 when not.
#[route("/hubs/{hub}/users/{sub}", method = "GET", method = "HEAD")]
async fn presence(
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (hub, sub) = path.into_inner();
    let route = Route::new("presence", PublishAction::Presence, &hub, &sub);
    let head = req.method() == actix_web::http::Method::HEAD;
    publish(&req, route, |hub| async move {
        let ids: Vec<String> = hub
            .lifetime
            .connections_of(&sub)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        if head && ids.is_empty() {
            return Err(ApiError::not_found(
                "user_not_connected",
                "the user is not connected",
            ));
        }
        Ok(HttpResponse::Ok().json(json!({
            "sub": sub,
            "online": !ids.is_empty(),
            "connections": ids,
        })))
    })
    .await
}
