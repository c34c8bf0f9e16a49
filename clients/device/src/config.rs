//! The device's validated configuration: built once from the command line, then passed down.

use signet_protocol::secret::Secret;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the device needs to run, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerUrl,
    /// The hub's path, e.g. `/hubs/home`; also bound into every envelope's signature.
    pub hub_path: String,
    pub device_id: String,
    /// Exchanged for access tokens; never logged (its `Debug` is redacted).
    pub device_key: Secret,
    /// A label for logs and the `state` telemetry; the server's name for the device is the one
    /// given at provisioning.
    pub name: String,
    pub telemetry_interval: Duration,
    /// How often the device sends a Ping.
    pub keep_alive: Duration,
    /// A connection on which nothing arrives for this long is considered dead.
    pub server_timeout: Duration,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Open the WebSocket directly instead of negotiating first.
    pub skip_negotiation: bool,
    /// TLS for an `https://` server: trusted roots and the optional client certificate.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    /// How long the simulated actuator takes per command; commands queue behind it.
    pub actuation_time: std::time::Duration,
    /// A result not delivered this long after its command arrived is dropped: the server
    /// has given up on it by then (its `home.command_timeout_secs`).
    pub result_timeout: std::time::Duration,
}

/// Why the configuration is unusable. The process exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--server: {0}")]
    Server(String),
    #[error("--device-id: must be 1 to 128 characters without white space or control characters")]
    DeviceId,
    #[error("no device key: give --device-key-file, --device-key or SIGNET_DEVICE_KEY")]
    MissingKey,
    #[error("the device key was given twice: use --device-key-file or --device-key/SIGNET_DEVICE_KEY, not both")]
    TwoKeys,
    #[error("the device key is empty or not printable ASCII")]
    BadKey,
    #[error("cannot read the device key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--hub-path: must start with '/' and contain no white space, '?' or '#'")]
    HubPath,
    #[error("{flag}: {reason}")]
    Timing { flag: &'static str, reason: String },
    #[error("{flag}: {reason}")]
    Tls { flag: &'static str, reason: String },
    #[error("--config {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0} is required (on the command line, in its environment variable or in --config)")]
    Missing(&'static str),
}

/// The server's base URL (`https://host:port[/prefix]`), without a trailing slash.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    base: String,
    host: String,
}

impl ServerUrl {
    /// Accepts `https://`, and `http://` to a loopback host or to any host with
    /// `allow_insecure`: the device key and tokens travel in the clear over plain HTTP.
    pub fn parse(text: &str, allow_insecure: bool) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::Server(reason.to_string());
        let uri: awc::http::Uri = text
            .parse()
            .map_err(|_| bad("not a URL, expected e.g. https://home.example.com"))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("the URL has no host, expected e.g. https://home.example.com"))?;
        if uri.query().is_some() || text.contains('#') {
            return Err(bad("the URL must not have a query or fragment"));
        }
        match uri.scheme_str() {
            Some("http") => {
                if !allow_insecure && !is_loopback(host) {
                    return Err(bad(
                        "plain http:// to a host other than this machine sends the device key \
                         and tokens in the clear; use a loopback address, or pass \
                         --allow-insecure-http on a network you trust",
                    ));
                }
            }
            Some("https") => {}
            _ => {
                return Err(bad(
                    "the scheme must be https:// (or http:// to this machine)",
                ))
            }
        }
        let base = text.trim_end_matches('/').to_string();
        let host = host.to_string();
        Ok(Self { base, host })
    }

    /// The host part, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `path` (starting with `/`) under the base URL.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Checks a device id: what the server generates is 22 base64url characters, but any id
/// without white space or control characters is passed on and left for the server to judge.
pub fn check_device_id(id: &str) -> Result<String, ConfigError> {
    let ok = !id.is_empty()
        && id.chars().count() <= 128
        && !id.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| id.to_string()).ok_or(ConfigError::DeviceId)
}

/// Checks a hub path such as `/hubs/home`.
pub fn check_hub_path(path: &str) -> Result<String, ConfigError> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#');
    ok.then(|| path.trim_end_matches('/').to_string())
        .ok_or(ConfigError::HubPath)
}

/// The device key from exactly one of its sources: a file, or the flag (or its environment
/// variable, which clap folds into the flag).
pub fn resolve_device_key(
    from_flag: Option<&str>,
    file: Option<&Path>,
) -> Result<Secret, ConfigError> {
    let text = match (from_flag, file) {
        (Some(_), Some(_)) => return Err(ConfigError::TwoKeys),
        (None, None) => return Err(ConfigError::MissingKey),
        (Some(text), None) => text.to_string(),
        (None, Some(path)) => read_key_file(path)?,
    };
    let text = text.trim();
    // Keys are base64url; anything outside printable ASCII is a copy-and-paste accident, and
    // would not fit an HTTP header or a JSON string unescaped anyway.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::BadKey);
    }
    Ok(Secret::from_text(text))
}

fn read_key_file(path: &Path) -> Result<String, ConfigError> {
    let error = |source| ConfigError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path) {
            if metadata.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the device key file is readable by other users; chmod 600 it"
                );
            }
        }
    }
    Ok(text)
}

pub use signet_protocol::duration::parse_duration;

/// `duration` must lie in `min..=max`.
pub fn check_range(
    flag: &'static str,
    duration: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if duration < min || duration > max {
        return Err(ConfigError::Timing {
            flag,
            reason: format!("must be between {min:?} and {max:?}"),
        });
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let url = ServerUrl::parse("http://127.0.0.1:8080/", false).unwrap();
        assert_eq!(url.join("/hubs/home"), "http://127.0.0.1:8080/hubs/home");
        assert!(ServerUrl::parse("http://localhost:8080", false).is_ok());
        assert!(ServerUrl::parse("http://[::1]:8080", false).is_ok());
        assert!(ServerUrl::parse("http://signet.example:8080", false).is_err());
        assert!(ServerUrl::parse("http://signet.example:8080", true).is_ok());
        assert!(ServerUrl::parse("https://signet.example", false).is_ok());
        assert!(ServerUrl::parse("ftp://127.0.0.1", true).is_err());
        assert!(ServerUrl::parse("127.0.0.1:8080", true).is_err());
        assert!(ServerUrl::parse("http://127.0.0.1/?x=1", true).is_err());
    }

    #[test]
    fn device_key_sources() {
        assert!(matches!(
            resolve_device_key(None, None),
            Err(ConfigError::MissingKey)
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "key-from-file\n").unwrap();
        assert!(matches!(
            resolve_device_key(Some("k"), Some(&file)),
            Err(ConfigError::TwoKeys)
        ));
        let key = resolve_device_key(None, Some(&file)).unwrap();
        assert_eq!(key.expose(), b"key-from-file");
        assert_eq!(format!("{key:?}"), "Secret([redacted])");
        assert!(matches!(
            resolve_device_key(Some("with space"), None),
            Err(ConfigError::BadKey)
        ));
        assert!(matches!(
            resolve_device_key(None, Some(&dir.path().join("missing"))),
            Err(ConfigError::KeyFile { .. })
        ));
    }

    #[test]
    fn ids_and_paths() {
        assert!(check_device_id("AbCdEfGhIjKlMnOpQrStUv").is_ok());
        assert!(check_device_id("").is_err());
        assert!(check_device_id("a b").is_err());
        assert_eq!(check_hub_path("/hubs/home/").unwrap(), "/hubs/home");
        assert!(check_hub_path("hubs/home").is_err());
        assert!(check_hub_path("/hubs/home?x").is_err());
    }
}
