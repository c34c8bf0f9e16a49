//! API keys of the backends that drive hubs through the publish API: created by an administrator
//! (`signet apikey create`, `POST /api/admin/api-keys`) with scopes per hub and per action,
//! shown once, stored as the SHA-256 of their secret, and revoked for good.
//!
//! A key reads `sgk_<id>_<secret>`: 16 hex digits of id (what lists and audit events name) and
//! 256 random bits of secret (43 base64url characters). Verification reads the key's row by id
//! on every call (a revocation holds at once, on every node sharing the store) and compares the
//! secret's hash in constant time; a store that does not answer refuses the call.

use super::{client_label, is_secret_token_shaped, new_secret_token, secret_hash, IdentityError};
use crate::auth::issue::unix_now;
use crate::store::{ApiKey, Store};
use rand::RngCore;
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What every key starts with, so a leaked one is recognisable (secret scanners, logs).
pub const API_KEY_PREFIX: &str = "sgk_";
/// Hex digits of a key's id.
const ID_LEN: usize = 16;
/// Longest key name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Most scopes on one key.
const MAX_SCOPES: usize = 32;
/// Longest hub name a scope may name (hub names are path segments).
const MAX_HUB_CHARS: usize = 64;

/// What a publish API call does, and what a scope grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishAction {
    /// Sends to all, a user, a group or a connection.
    Send,
    /// Adds and removes group members.
    Groups,
    /// Closes a user's connections.
    Disconnect,
    /// Asks whether a user is connected.
    Presence,
}

impl PublishAction {
    pub const ALL: [Self; 4] = [Self::Send, Self::Groups, Self::Disconnect, Self::Presence];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Groups => "groups",
            Self::Disconnect => "disconnect",
            Self::Presence => "presence",
        }
    }
}

/// One grant: `hub:<hub|*>:<action|*>`; `None` stands for `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    hub: Option<String>,
    action: Option<PublishAction>,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = || format!("`{text}` is not hub:<hub|*>:<action|*>");
        let mut parts = text.split(':');
        let (Some("hub"), Some(hub), Some(action), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let hub = match hub {
            "*" => None,
            name if is_hub_name(name) => Some(name.to_string()),
            _ => return Err(format!("`{text}`: the hub is `*` or a hub name")),
        };
        let action = match action {
            "*" => None,
            name => Some(
                PublishAction::ALL
                    .into_iter()
                    .find(|a| a.as_str() == name)
                    .ok_or_else(|| {
                        format!("`{text}`: the action is `*`, send, groups, disconnect or presence")
                    })?,
            ),
        };
        Ok(Self { hub, action })
    }

    pub fn allows(&self, hub: &str, action: PublishAction) -> bool {
        self.hub.as_deref().is_none_or(|h| h == hub) && self.action.is_none_or(|a| a == action)
    }
}

fn is_hub_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HUB_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether any of a key's scopes (as stored) grants `action` on `hub`.
pub fn scopes_allow(scopes: &[String], hub: &str, action: PublishAction) -> bool {
    scopes
        .iter()
        .filter_map(|s| Scope::parse(s).ok())
        .any(|s| s.allows(hub, action))
}

/// A key just created: the only time its full text exists outside the caller.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: ApiKey,
    /// `sgk_<id>_<secret>`, to hand to the backend.
    pub text: String,
}

/// `(id, secret)` of a presented key, if it has a key's shape.
fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let secret = secret.strip_prefix('_')?;
    let hex = id.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && is_secret_token_shaped(secret)).then_some((id, secret))
}

/// The publish API's keys over the store.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    store: Arc<dyn Store>,
}

impl ApiKeys {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates a key named `name` with `scopes`; `by` (an admin's `sub`, or `cli`) is audited.
    pub async fn create(
        &self,
        name: &str,
        scopes: &[String],
        by: &str,
        client: Option<IpAddr>,
    ) -> Result<NewApiKey, IdentityError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(IdentityError::invalid(
                "name",
                format!("1 to {MAX_NAME_CHARS} printable characters"),
            ));
        }
        if scopes.is_empty() || scopes.len() > MAX_SCOPES {
            return Err(IdentityError::invalid(
                "scopes",
                format!("1 to {MAX_SCOPES} scopes, each hub:<hub|*>:<action|*>"),
            ));
        }
        for scope in scopes {
            Scope::parse(scope).map_err(|rule| IdentityError::invalid("scopes", rule))?;
        }
        let mut id = [0u8; ID_LEN / 2];
        rand::rng().fill_bytes(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let (secret, hash) = new_secret_token();
        let key = ApiKey {
            id,
            name: name.to_string(),
            scopes: scopes.to_vec(),
            created_at: unix_now(),
            revoked_at: None,
        };
        self.store.create_api_key(&key, &hash).await?;
        tracing::info!(target: "audit", event = "api_key_created", key = %key.id, name = %key.name,
            scopes = %key.scopes.join(" "), by, client = %client_label(client), "API key created");
        let text = format!("{API_KEY_PREFIX}{}_{secret}", key.id);
        Ok(NewApiKey { key, text })
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>, IdentityError> {
        Ok(self.store.list_api_keys().await?)
    }

    /// Revokes key `id` for good: every later call with it is refused, on every node sharing
    /// the store. 404 `api_key_not_found` if no live key has that id.
    pub async fn revoke(
        &self,
        id: &str,
        by: &str,
        client: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        if !self.store.revoke_api_key(id, unix_now()).await? {
            return Err(IdentityError::ApiKeyNotFound);
        }
        tracing::info!(target: "audit", event = "api_key_revoked", key = %id, by,
            client = %client_label(client), "API key revoked");
        Ok(())
    }

    /// The live key `presented` is, or [`IdentityError::InvalidApiKey`] whatever the reason
    /// (the reason goes to the debug log, the key never does).
    pub async fn verify(&self, presented: &str) -> Result<ApiKey, IdentityError> {
        let refused = |reason: &str| {
            tracing::debug!(reason, "API key refused");
            IdentityError::InvalidApiKey
        };
        let (id, secret) = split_key(presented).ok_or_else(|| refused("malformed"))?;
        let Some(stored) = self.store.api_key(id).await? else {
            return Err(refused("unknown"));
        };
        let matches: bool = secret_hash(secret)
            .as_slice()
            .ct_eq(stored.secret_hash.as_slice())
            .into();
        if !matches {
            return Err(refused("wrong secret"));
        }
        if stored.key.revoked_at.is_some() {
            return Err(refused("revoked"));
        }
        Ok(stored.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn scopes_grant_their_hub_and_action_only() {
        let send_home = Scope::parse("hub:home:send").unwrap();
        assert!(send_home.allows("home", PublishAction::Send));
        assert!(!send_home.allows("home", PublishAction::Groups));
        assert!(!send_home.allows("other", PublishAction::Send));
        let any_hub = Scope::parse("hub:*:presence").unwrap();
        assert!(any_hub.allows("other", PublishAction::Presence));
        assert!(!any_hub.allows("other", PublishAction::Send));
        let everything = Scope::parse("hub:home:*").unwrap();
        assert!(PublishAction::ALL
            .iter()
            .all(|a| everything.allows("home", *a)));
        for bad in [
            "home:send",
            "hub:home",
            "hub:home:send:x",
            "hub:home:publish",
            "hub::send",
            "hub:a/b:send",
            "user:home:send",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        let stored = vec!["hub:home:send".to_string(), "nonsense".to_string()];
        assert!(scopes_allow(&stored, "home", PublishAction::Send));
        assert!(!scopes_allow(&stored, "home", PublishAction::Disconnect));
    }

    #[tokio::test]
    async fn a_key_verifies_until_revoked_and_only_with_its_secret() {
        let keys = ApiKeys::new(Arc::new(SqliteStore::open_in_memory().await.unwrap()));
        let created = keys
            .create("backend", &["hub:home:send".into()], "test", None)
            .await
            .unwrap();
        assert!(created.text.starts_with("sgk_"));
        assert_eq!(keys.verify(&created.text).await.unwrap(), created.key);
        // Same id, another secret; a truncated key; the id alone.
        let (_, secret) = split_key(&created.text).unwrap();
        let forged = created.text.replace(secret, &new_secret_token().0);
        for wrong in [
            &forged,
            &created.text[..20],
            &format!("sgk_{}", created.key.id),
        ] {
            assert!(matches!(
                keys.verify(wrong).await,
                Err(IdentityError::InvalidApiKey)
            ));
        }
        assert_eq!(keys.list().await.unwrap(), vec![created.key.clone()]);
        keys.revoke(&created.key.id, "test", None).await.unwrap();
        assert!(matches!(
            keys.verify(&created.text).await,
            Err(IdentityError::InvalidApiKey)
        ));
        assert!(matches!(
            keys.revoke(&created.key.id, "test", None).await,
            Err(IdentityError::ApiKeyNotFound)
        ));
        assert!(matches!(
            keys.create("x", &["hub:home:fly".into()], "test", None)
                .await,
            Err(IdentityError::Invalid {
                field: "scopes",
                ..
            })
        ));
        assert!(matches!(
            keys.create(" ", &["hub:home:send".into()], "test", None)
                .await,
            Err(IdentityError::Invalid { field: "name", .. })
        ));
    }
}
