//! `[cluster]`: several Signet nodes sharing live state over Redis. Unset `redis_url` keeps
//! everything in this process (one node, no Redis needed).

use super::store::{mask_password, masked_url};
use super::SettingsError;
use serde::{Deserialize, Serialize};

/// Longest node id: it prefixes every connection id of the node.
pub const MAX_NODE_ID_CHARS: usize = 32;

/// `[cluster]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// `redis://[user[:password]@]host[:port][/db]` (or `rediss://` for TLS). Unset: a single
    /// node. Printed with its password masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<RedisUrl>,
    /// This node's name in the cluster: letters, digits, `-` and `_`, at most 32. Empty (the
    /// default): a random one is generated at start-up and logged. Two live nodes must never
    /// share one.
    pub node_id: String,
    /// Prefix of every Redis channel and key Signet uses, so several clusters can share one
    /// Redis.
    pub channel_prefix: String,
    /// Requests one user (`sub`) may have forwarded to other nodes and waiting for their
    /// answers at once, on this node (> 0). Beyond it: 429 `too_many_forwarded_requests`.
    /// Default 256: a long poll and a send on each of `hub.max_connections_per_user` (100)
    /// connections, with room to spare.
    pub max_forwarded_per_user: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: String::new(),
            channel_prefix: "signet".into(),
            max_forwarded_per_user: 256,
        }
    }
}

/// Whether `id` may name a node (it becomes part of connection ids and channel names).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= MAX_NODE_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ClusterSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !self.node_id.is_empty() && !valid_node_id(&self.node_id) {
            return Err(SettingsError::invalid(
                "cluster.node_id",
                "must be at most 32 letters, digits, '-' or '_' (or empty for a generated one)",
            ));
        }
        if self.channel_prefix.is_empty()
            || self.channel_prefix.len() > 64
            || self
                .channel_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SettingsError::invalid(
                "cluster.channel_prefix",
                "must be 1 to 64 characters without spaces",
            ));
        }
        if self.max_forwarded_per_user == 0 {
            return Err(SettingsError::invalid(
                "cluster.max_forwarded_per_user",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A Redis URL. `Debug` and `Serialize` mask its password; [`RedisUrl::expose`] gives the whole
/// URL to the client.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// A `redis://` or `rediss://` URL; anything else is refused with the rule it breaks.
    pub fn new(url: impl Into<String>) -> Result<Self, String> {
        let url = url.into();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err("must be a redis:// or rediss:// URL (unset it for a single node)".into());
        }
        Ok(Self(url))
    }

    /// The URL with its password. Named so that every use stands out in review.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced, for logs.
    pub fn masked(&self) -> String {
        mask_password(&self.0)
    }
}

masked_url!(RedisUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_prefixes_are_checked_and_the_password_is_masked() {
        let mut cluster = ClusterSettings::default();
        assert!(cluster.validate().is_ok());
        for good in ["a", "node-1", "eu_west_2", &"x".repeat(32)] {
            cluster.node_id = good.into();
            assert!(cluster.validate().is_ok(), "{good}");
        }
        for bad in ["a.b", "a b", "é", &"x".repeat(33), "a:b"] {
            cluster.node_id = bad.into();
            assert!(cluster.validate().is_err(), "{bad}");
        }
        cluster.node_id.clear();
        cluster.channel_prefix = "has space".into();
        assert!(cluster.validate().is_err());
        cluster.channel_prefix.clear();
        assert!(cluster.validate().is_err());

        let url = RedisUrl::new("redis://default:hunter2@cache:6379/0").unwrap();
        assert_eq!(url.masked(), "redis://default:[redacted]@cache:6379/0");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(RedisUrl::new("http://cache").is_err());
    }
}
