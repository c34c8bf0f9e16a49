//! `/api/devices`: provisioning devices, listing them, removing them, and re-keying them.
//! Owners manage their own devices; administrators manage all.

use crate::auth::Authenticated;
use crate::http::{client_addr, ApiError, Json};
use crate::identity::{IdentityService, NewDeviceKey};
use crate::store::Device;
use actix_web::http::header;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct CreateDevice {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceKeyBody {
    device_id: String,
    device_key: String,
}

impl From<NewDeviceKey> for DeviceKeyBody {
    fn from(new: NewDeviceKey) -> Self {
        Self {
            device_id: new.device.id,
            device_key: new.device_key,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceBody {
    device_id: String,
    name: String,
    owner_id: String,
    created_at: i64,
    key_rotated_at: i64,
    last_token_at: Option<i64>,
}

impl From<Device> for DeviceBody {
    fn from(d: Device) -> Self {
        Self {
            device_id: d.id,
            name: d.name,
            owner_id: d.owner_id,
            created_at: d.created_at,
            key_rotated_at: d.key_rotated_at,
            last_token_at: d.last_token_at,
        }
    }
}

/// `POST /api/devices` (Bearer, user) `{name}` -> 201 `{deviceId, deviceKey}`; the key is
/// shown this once.
#[post("/devices")]
pub async fn create(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    Json(body): Json<CreateDevice>,
) -> Result<HttpResponse, ApiError> {
    let created = identity
        .create_device(&principal, &body.name, client_addr(&req))
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DeviceKeyBody::from(created)))
}

/// `GET /api/devices` (Bearer): the caller's devices; an administrator's lists all.
#[get("/devices")]
pub async fn list(
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
) -> Result<HttpResponse, ApiError> {
    let devices = identity.list_devices(&principal).await?;
    let body: Vec<DeviceBody> = devices.into_iter().map(DeviceBody::from).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `DELETE /api/devices/{id}` (Bearer, owner or admin) -> 204.
#[delete("/devices/{id}")]
pub async fn delete(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    identity
        .delete_device(&principal, &id, client_addr(&req))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/devices/{id}/rotate-key` (Bearer, owner or admin) -> `{deviceId, deviceKey}`.
#[post("/devices/{id}/rotate-key")]
pub async fn rotate_key(
    req: HttpRequest,
    Authenticated(principal): Authenticated,
    identity: web::Data<IdentityService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rotated = identity
        .rotate_device_key(&principal, &id, client_addr(&req))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DeviceKeyBody::from(rotated)))
}
