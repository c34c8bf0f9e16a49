//! `/api/admin/...`: operations for the `admin` role, the publish API's keys among them.

use crate::auth::{Authenticated, Principal};
use crate::http::{client_addr, ApiError, Json};
use crate::identity::{IdentityService, ADMIN_ROLE};
use crate::metrics::StatsSeries;
use crate::store::ApiKey;
use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.has_role(ADMIN_ROLE) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "forbidden",
            "this operation needs the admin role",
        ))
    }
}

/// `POST /api/admin/users/{username}/revoke` (admin) -> 204: every token issued to the user
/// (and to their devices) before now is refused from now on; their sessions end.
#[post("/admin/users/{username}/revoke")]
pub async fn revoke_user(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&principal)?;
    identity
        .revoke_user(&principal, &username, client_addr(&req))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /api/admin/stats` (admin) -> `{intervalSecs, points: [{t, connections, messagesPerSec,
/// invocationsPerSec, envelopeRejectionsPerSec}]}`, oldest first: what the console charts.
#[get("/admin/stats")]
pub async fn stats(
    Authenticated(principal): Authenticated,
    series: web::Data<StatsSeries>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&principal)?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(serde_json::json!({
            "intervalSecs": series.interval().as_secs(),
            "points": series.points(),
        })))
}

#[derive(Deserialize)]
pub struct CreateApiKey {
    name: String,
    scopes: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiKeyBody {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl From<ApiKey> for ApiKeyBody {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name,
            scopes: key.scopes,
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// `POST /api/admin/api-keys` (admin) `{name, scopes}` -> 201 `{id, name, scopes, createdAt,
/// revokedAt, key}`: the key is shown this once.
#[post("/admin/api-keys")]
pub async fn create_api_key(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    Json(body): Json<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&principal)?;
    let created = identity
        .api_keys()
        .create(&body.name, &body.scopes, &principal.sub, client_addr(&req))
        .await?;
    let mut answer =
        serde_json::to_value(ApiKeyBody::from(created.key)).map_err(ApiError::internal)?;
    answer["key"] = created.text.into();
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(answer))
}

/// `GET /api/admin/api-keys` (admin) -> 200 `[{id, name, scopes, createdAt, revokedAt}]`,
/// oldest first, revoked keys too; never a key itself.
#[get("/admin/api-keys")]
pub async fn list_api_keys(
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&principal)?;
    let keys: Vec<ApiKeyBody> = identity
        .api_keys()
        .list()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}

/// `DELETE /api/admin/api-keys/{id}` (admin) -> 204: the key is refused from now on, on every
/// node sharing the store; 404 `api_key_not_found`.
#[delete("/admin/api-keys/{id}")]
pub async fn revoke_api_key(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&principal)?;
    identity
        .api_keys()
        .revoke(&id, &principal.sub, client_addr(&req))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
