//! Devices: provisioned once by their owner with a 256-bit key (shown once, stored hashed),
//! then exchanging that key for short-lived access tokens on their own.

use super::users::{ADMIN_ROLE, DEVICE_ROLE, USER_ROLE};
use super::{
    client_label, is_secret_token_shaped, new_secret_token, secret_hash, IdentityError,
    IdentityService,
};
use crate::auth::issue::{random_id, unix_now};
use crate::auth::Principal;
use crate::store::Device;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// Longest device name, in characters. A format rule of the API, like the username's.
pub const MAX_DEVICE_NAME_CHARS: usize = 64;

/// A device's `sub`.
pub fn device_subject(device_id: &str) -> String {
    format!("device:{device_id}")
}

/// A device's id and its key, as shown once at creation or re-key.
#[derive(Debug, Clone)]
pub struct NewDeviceKey {
    pub device: Device,
    pub device_key: String,
}

#[derive(Debug, Clone)]
pub struct DeviceToken {
    pub access_token: String,
    pub expires_in: i64,
    pub message_key: String,
}

fn is_admin(principal: &Principal) -> bool {
    principal.has_role(ADMIN_ROLE)
}

/// Device management is for people: users and administrators, never devices.
fn require_person(principal: &Principal) -> Result<(), IdentityError> {
    let person = principal.has_role(USER_ROLE) || is_admin(principal);
    if !person || principal.has_role(DEVICE_ROLE) {
        return Err(IdentityError::Forbidden(
            "only users and administrators manage devices",
        ));
    }
    Ok(())
}

fn check_device_name(name: &str) -> Result<String, IdentityError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_DEVICE_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(IdentityError::invalid(
            "name",
            format!("1 to {MAX_DEVICE_NAME_CHARS} characters, no control characters"),
        ));
    }
    Ok(name.to_string())
}

/// Device ids are the 22-character base64url ids Signet generates.
fn is_device_id_shaped(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl IdentityService {
    /// Provisions a device owned by the caller, who must be a user of this server.
    pub async fn create_device(
        &self,
        principal: &Principal,
        name: &str,
        client: Option<IpAddr>,
    ) -> Result<NewDeviceKey, IdentityError> {
        require_person(principal)?;
        let name = check_device_name(name)?;
        if self.inner.store.user_by_id(&principal.sub).await?.is_none() {
            return Err(IdentityError::Forbidden(
                "devices belong to users of this server; this token's subject is not one",
            ));
        }
        let now = unix_now();
        let device = Device {
            id: random_id(),
            owner_id: principal.sub.clone(),
            name,
            created_at: now,
            key_rotated_at: now,
            last_token_at: None,
        };
        let (device_key, key_hash) = new_secret_token();
        let max = self.inner.max_devices_per_user;
        if !self
            .inner
            .store
            .create_device(&device, &key_hash, max)
            .await?
        {
            return Err(IdentityError::DeviceLimit(max));
        }
        tracing::info!(
            target: "audit", event = "device_created", device = %device.id,
            sub = %principal.sub, client = %client_label(client),
        );
        Ok(NewDeviceKey { device, device_key })
    }

    /// The caller's devices; an administrator's lists every device.
    pub async fn list_devices(&self, principal: &Principal) -> Result<Vec<Device>, IdentityError> {
        require_person(principal)?;
        let owner = (!is_admin(principal)).then_some(principal.sub.as_str());
        Ok(self.inner.store.list_devices(owner).await?)
    }

    /// The device if the caller owns it or is an administrator. Anyone else is told it does not
    /// exist, so ids cannot be probed.
    async fn managed_device(
        &self,
        principal: &Principal,
        device_id: &str,
    ) -> Result<Device, IdentityError> {
        require_person(principal)?;
        if !is_device_id_shaped(device_id) {
            return Err(IdentityError::DeviceNotFound);
        }
        let device = self
            .inner
            .store
            .device(device_id)
            .await?
            .map(|c| c.device)
            .ok_or(IdentityError::DeviceNotFound)?;
        if device.owner_id != principal.sub && !is_admin(principal) {
            return Err(IdentityError::DeviceNotFound);
        }
        Ok(device)
    }

    /// Removes a device: its key stops working and every token it holds is refused.
    pub async fn delete_device(
        &self,
        principal: &Principal,
        device_id: &str,
        client: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let device = self.managed_device(principal, device_id).await?;
        let sub = device_subject(&device.id);
        // The key stops working first: the revocation closes the device's connections at once,
        // and a device that then tries its key must find it refused, not get a fresh token in
        // the moment before the row is gone. Each step fails closed if a later one fails.
        let (_, unusable_key) = new_secret_token();
        if !self
            .inner
            .store
            .set_device_key(&device.id, &unusable_key, unix_now())
            .await?
        {
            return Err(IdentityError::DeviceNotFound);
        }
        self.inner
            .auth
            .revocations()
            .revoke_device(&sub, None)
            .await?;
        if !self.inner.store.delete_device(&device.id).await? {
            return Err(IdentityError::DeviceNotFound);
        }
        tracing::info!(
            target: "audit", event = "device_removed", device = %device.id,
            owner = %device.owner_id, sub = %principal.sub, client = %client_label(client),
        );
        Ok(())
    }

    /// Gives a device a new key (shown once): the old key stops working and every token issued
    /// to the device before now is refused.
    pub async fn rotate_device_key(
        &self,
        principal: &Principal,
        device_id: &str,
        client: Option<IpAddr>,
    ) -> Result<NewDeviceKey, IdentityError> {
        let mut device = self.managed_device(principal, device_id).await?;
        let (device_key, key_hash) = new_secret_token();
        let now = unix_now();
        if !self
            .inner
            .store
            .set_device_key(&device.id, &key_hash, now)
            .await?
        {
            return Err(IdentityError::DeviceNotFound);
        }
        device.key_rotated_at = now;
        // The next second, as for users: tokens are stamped in whole seconds. Taken after the
        // key changed, so that an exchange of the old key that re-read it before the change
        // (see `device_token`) made a token older than the cut-off.
        self.inner
            .auth
            .revocations()
            .revoke_device(&device_subject(&device.id), Some(unix_now() + 1))
            .await?;
        tracing::info!(
            target: "audit", event = "device_rekeyed", device = %device.id,
            owner = %device.owner_id, sub = %principal.sub, client = %client_label(client),
        );
        Ok(NewDeviceKey { device, device_key })
    }

    /// Makes the keys of every device `owner_id` owns unusable (an administrator's revoke of
    /// the owner); the owner gives each a new key with `rotate_device_key`. Returns how many.
    pub(crate) async fn revoke_owned_device_keys(
        &self,
        owner_id: &str,
    ) -> Result<u64, IdentityError> {
        Ok(self
            .inner
            .store
            .disable_owner_device_keys(owner_id, unix_now())
            .await?)
    }

    /// A device proves its key and gets an access token: `sub = "device:<id>"`, role `device`,
    /// `owner` = its owner's user id, `name` = the device name.
    pub async fn device_token(
        &self,
        device_id: &str,
        device_key: &str,
        client: Option<IpAddr>,
    ) -> Result<DeviceToken, IdentityError> {
        let stored = if is_device_id_shaped(device_id) {
            self.inner.store.device(device_id).await?
        } else {
            None
        };
        let presented = secret_hash(device_key);
        // The comparison runs whether or not the device exists, in constant time.
        let expected = stored.as_ref().map_or(&[0u8; 32][..], |c| &c.key_hash[..]);
        let key_matches: bool = presented.ct_eq(expected).into();
        let device = match stored {
            Some(credentials) if key_matches && is_secret_token_shaped(device_key) => {
                credentials.device
            }
            _ => {
                let shown_id = if is_device_id_shaped(device_id) {
                    device_id
                } else {
                    "[invalid]"
                };
                tracing::warn!(
                    target: "audit", event = "device_token", outcome = "failure",
                    device = %shown_id, client = %client_label(client),
                );
                return Err(IdentityError::InvalidDeviceCredentials);
            }
        };
        let mut claims = self.inner.auth.keyring().claims(
            device_subject(&device.id),
            vec![DEVICE_ROLE.to_string()],
            self.inner.access_ttl,
        );
        claims.owner = Some(device.owner_id.clone());
        claims.name = Some(device.name.clone());
        let (access_token, expires_at, message_key) = match self.issue(claims).await {
            // A re-key, removal or owner's revoke landed while the token was made: the key it
            // was traded for is no longer the device's.
            Err(IdentityError::Revoked) => {
                tracing::warn!(
                    target: "audit", event = "device_token", outcome = "key_replaced",
                    device = %device.id, client = %client_label(client),
                );
                return Err(IdentityError::InvalidDeviceCredentials);
            }
            other => other?,
        };
        // A re-key or an owner's revoke may have replaced the key while the token was made
        // (issuance waits out a fresh cut-off): the token is handed out only if the key it was
        // traded for is still the device's.
        let still_current = self
            .inner
            .store
            .device(&device.id)
            .await?
            .is_some_and(|c| bool::from(c.key_hash[..].ct_eq(&presented[..])));
        if !still_current {
            tracing::warn!(
                target: "audit", event = "device_token", outcome = "key_replaced",
                device = %device.id, client = %client_label(client),
            );
            return Err(IdentityError::InvalidDeviceCredentials);
        }
        self.inner
            .store
            .record_device_token(&device.id, unix_now())
            .await?;
        tracing::info!(
            target: "audit", event = "device_token", outcome = "success", device = %device.id,
            owner = %device.owner_id, client = %client_label(client),
        );
        Ok(DeviceToken {
            access_token,
            expires_in: expires_at - unix_now(),
            message_key,
        })
    }
}
