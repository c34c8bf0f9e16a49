//! The device registry as a hub sees it: read-only, over the store, without the devices'
//! key hashes.

use super::OpaqueError;
use crate::auth::Principal;
use crate::identity::device_subject;
use crate::store::{Device, Store};
use std::fmt;
use std::sync::Arc;

/// The role of a device's tokens (`POST /api/devices/token`).
const DEVICE_ROLE: &str = "device";

/// The server's registered devices (`/api/devices`), read-only, from
/// [`crate::HubContext::devices`]: whose a device is, and which devices a user has. Devices
/// connect with tokens whose `sub` is `device:<id>` ([`Devices::subject`]), role `device`,
/// and whose `owner` is their user's id; what a device may do on a hub is the hub's to decide.
///
/// ```no_run
/// use signet::{Devices, HubBuilder, HubContext, HubError, MethodSpec};
///
/// fn setup(hub: HubBuilder, context: &HubContext<'_>) -> HubBuilder {
///     let devices = context.devices();
///     hub.method(MethodSpec::new("MyDevices", &[]), move |call, _| {
///         let devices = devices.clone();
///         async move {
///             let mine = devices
///                 .owned_by(&call.principal.sub)
///                 .await
///                 .map_err(HubError::internal)?;
///             let names: Vec<String> = mine.into_iter().map(|device| device.name).collect();
///             Ok(Some(names.into()))
///         }
///     })
/// }
/// ```
#[derive(Clone)]
pub struct Devices {
    store: Arc<dyn Store>,
}

impl fmt::Debug for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Devices").finish_non_exhaustive()
    }
}

/// A registered device, as [`Devices`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The device's id (its tokens' `sub` is `device:<id>`).
    pub id: String,
    /// The id of the user who owns it (the `sub` of their tokens).
    pub owner: String,
    /// The name its owner gave it.
    pub name: String,
    /// When it was registered, in Unix seconds.
    pub created_at: i64,
}

impl From<Device> for DeviceInfo {
    fn from(device: Device) -> Self {
        Self {
            id: device.id,
            owner: device.owner_id,
            name: device.name,
            created_at: device.created_at,
        }
    }
}

impl Devices {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The device `id`, with its owner; `None` if there is none.
    pub async fn get(&self, id: &str) -> Result<Option<DeviceInfo>, OpaqueError> {
        let found = self.store.device(id).await.map_err(OpaqueError::new)?;
        Ok(found.map(|credentials| credentials.device.into()))
    }

    /// The devices of the user `owner` (a user id, the `sub` of their tokens).
    pub async fn owned_by(&self, owner: &str) -> Result<Vec<DeviceInfo>, OpaqueError> {
        self.list(Some(owner)).await
    }

    /// Every registered device.
    pub async fn all(&self) -> Result<Vec<DeviceInfo>, OpaqueError> {
        self.list(None).await
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<DeviceInfo>, OpaqueError> {
        let devices = self
            .store
            .list_devices(owner)
            .await
            .map_err(OpaqueError::new)?;
        Ok(devices.into_iter().map(DeviceInfo::from).collect())
    }

    /// The `sub` of device `device_id`'s tokens, whom presence and sends to a user address.
    ///
    /// ```
    /// assert_eq!(signet::Devices::subject("lamp-1"), "device:lamp-1");
    /// ```
    pub fn subject(device_id: &str) -> String {
        device_subject(device_id)
    }

    /// The device id of a device's principal (role `device`, `sub` `device:<id>`); `None`
    /// for anyone else.
    ///
    /// ```
    /// use signet::{Devices, Principal};
    ///
    /// let principal = |roles: &[&str]| -> Principal {
    ///     let claims = serde_json::json!({
    ///         "sub": "device:lamp-1", "roles": roles, "expiresAt": 0, "kid": "key-1",
    ///     });
    ///     serde_json::from_value(claims).unwrap()
    /// };
    /// assert_eq!(Devices::id_of(&principal(&["device"])), Some("lamp-1"));
    /// assert_eq!(Devices::id_of(&principal(&["user"])), None, "not a device's token");
    /// ```
    pub fn id_of(principal: &Principal) -> Option<&str> {
        // Asked on every connect and disconnect: a user's principal costs no formatting.
        if !principal.has_role(DEVICE_ROLE) {
            return None;
        }
        principal.sub.strip_prefix(device_subject("").as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeviceStore, SqliteStore, User, UserStore};

    fn device(id: &str, owner: &str) -> Device {
        Device {
            id: id.into(),
            owner_id: owner.into(),
            name: format!("{id} of {owner}"),
            created_at: 1_700_000_000,
            key_rotated_at: 1_700_000_000,
            last_token_at: None,
        }
    }

    #[tokio::test]
    async fn the_view_shows_each_users_devices_and_each_devices_owner() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        for owner in ["alice", "bob"] {
            let user = User {
                id: owner.into(),
                username: owner.into(),
                roles: vec!["user".into()],
                created_at: 1_700_000_000,
            };
            store.create_user(&user, "hash").await.unwrap();
        }
        for (id, owner) in [("lamp", "alice"), ("fan", "alice"), ("door", "bob")] {
            assert!(store
                .create_device(&device(id, owner), b"key-hash", 10)
                .await
                .unwrap());
        }
        let devices = Devices::new(Arc::new(store));

        let mut alices: Vec<String> = devices
            .owned_by("alice")
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        alices.sort();
        assert_eq!(alices, ["fan", "lamp"]);
        assert_eq!(devices.all().await.unwrap().len(), 3);
        assert_eq!(
            devices.get("door").await.unwrap(),
            Some(DeviceInfo::from(device("door", "bob")))
        );
        assert_eq!(devices.get("nothing").await.unwrap(), None);
        assert!(devices.owned_by("carol").await.unwrap().is_empty());
    }
}
