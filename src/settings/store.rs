//! `[store]`: where users, devices, sessions and revocation records live. Unset `url` keeps
//! them in the embedded SQLite file in the data directory; a `postgres://` URL puts them in a
//! PostgreSQL database that several nodes may share.

use super::SettingsError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `postgres://user[:password]@host[:port]/db[?sslmode=...]`. Unset: SQLite in the data
    /// directory. Printed with its password masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<StoreUrl>,
    /// A file holding the database password (first line), instead of putting it in `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Connections each node keeps to PostgreSQL, at most.
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered 503
    /// `store_unavailable`; this bounds every request while the database is unreachable.
    pub acquire_timeout_secs: u64,
    /// PostgreSQL's `statement_timeout` for every statement Signet runs.
    pub statement_timeout_secs: u64,
    /// The revocation feed (`LISTEN`) is asked whether it still answers after this long
    /// without a notification, and is lost when it does not answer within
    /// `acquire_timeout_secs`. While it is lost, this node refuses every token (503
    /// `store_unavailable`).
    pub feed_heartbeat_secs: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            max_connections: 10,
            acquire_timeout_secs: 3,
            statement_timeout_secs: 5,
            feed_heartbeat_secs: 2,
        }
    }
}

impl StoreSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for (key, value) in [
            ("store.max_connections", u64::from(self.max_connections)),
            ("store.acquire_timeout_secs", self.acquire_timeout_secs),
            ("store.statement_timeout_secs", self.statement_timeout_secs),
            ("store.feed_heartbeat_secs", self.feed_heartbeat_secs),
        ] {
            if value == 0 {
                return Err(SettingsError::invalid(key, "must be greater than zero"));
            }
        }
        if self.url.is_none() && self.password_file.is_some() {
            return Err(SettingsError::invalid(
                "store.password_file",
                "needs store.url (the SQLite store has no password)",
            ));
        }
        Ok(())
    }

    /// The password from `password_file` (its first line), if one is configured.
    pub fn password(&self) -> Result<Option<String>, SettingsError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Secret {
            key: "store.password_file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let password = text.lines().next().unwrap_or("").to_string();
        if password.is_empty() {
            return Err(SettingsError::Secret {
                key: "store.password_file".into(),
                message: format!("{} holds no password", path.display()),
            });
        }
        Ok(Some(password))
    }
}

/// A database URL. `Debug` and `Serialize` mask its password, so it can be logged and printed
/// by `check-config`; [`StoreUrl::expose`] gives the whole URL to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// A `postgres://` or `postgresql://` URL; anything else is refused with the rule it
    /// breaks.
    pub fn new(url: impl Into<String>) -> Result<Self, String> {
        let url = url.into();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "must be a postgres:// URL (unset it for the embedded SQLite store)".into(),
            );
        }
        Ok(Self(url))
    }

    /// The URL with its password. Named so that every use stands out in review.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password, if any, replaced by `[redacted]`.
    pub fn masked(&self) -> String {
        mask_password(&self.0)
    }
}

/// `url` with the password of its user information, if any, replaced by `[redacted]`.
pub(super) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user information ends at the last `@` before the path.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:[redacted]{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// `Debug` and `Serialize` that print a URL newtype with its password masked (its `masked()`),
/// and `Deserialize` through its checking `new(String) -> Result<Self, String>`.
macro_rules! masked_url {
    ($name:ident) => {
        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.masked())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.masked())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::new(text).map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(super) use masked_url;

masked_url!(StoreUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_of_a_url_is_masked() {
        let url = StoreUrl::new("postgres://signet:hunter2@db.example:5432/signet?sslmode=require")
            .unwrap();
        assert_eq!(
            url.masked(),
            "postgres://signet:[redacted]@db.example:5432/signet?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("hunter2"));
        let plain = StoreUrl::new("postgres://signet@db/signet").unwrap();
        assert_eq!(plain.masked(), "postgres://signet@db/signet");
        assert!(StoreUrl::new("mysql://x/y").is_err());
    }
}
