//! `[[upstream]]`: hub methods forwarded to a backend over HTTP, and the connection events
//! sent there too. See the README's "Forward calls to your backend".

use super::SettingsError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One backend and what a hub forwards to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// The hub whose methods these are (`home`).
    pub hub: String,
    /// The backend's URL (http or https); every call and event is a POST to it.
    pub url: String,
    /// The forwarded methods: names, or tables `{ name, roles, signed }`.
    pub methods: Vec<UpstreamMethod>,
    /// The connection events forwarded too: `connected`, `disconnected`.
    pub events: Vec<UpstreamEvent>,
    /// How long a call waits for the backend's whole answer.
    pub timeout_ms: u64,
    /// The HMAC key that signs each request (at least 32 bytes), shared with the backend.
    pub secret_file: PathBuf,
    /// Largest answer read from the backend; a longer one fails the call.
    pub max_response_bytes: usize,
    /// Calls and events in flight to this backend at once (per node); more are refused.
    pub max_concurrent_calls: usize,
    /// Most arguments a forwarded (unsigned) method accepts.
    pub max_arguments: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            hub: "home".into(),
            url: String::new(),
            methods: Vec::new(),
            events: Vec::new(),
            timeout_ms: 5_000,
            secret_file: PathBuf::new(),
            max_response_bytes: 64 * 1024,
            max_concurrent_calls: 64,
            max_arguments: 16,
        }
    }
}

/// A forwarded method: a bare name (any authenticated caller, unsigned), or a table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UpstreamMethod {
    /// `"Name"`: any authenticated caller, unsigned.
    Name(String),
    /// `{ name, roles, signed }`.
    Declared(DeclaredMethod),
}

/// A forwarded method declared as a table, with its access rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredMethod {
    /// The hub method's name.
    pub name: String,
    /// Callers need one of these roles; empty: any authenticated caller.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The single argument must be a signed envelope, verified before forwarding.
    #[serde(default)]
    pub signed: bool,
}

impl UpstreamMethod {
    /// The hub method's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Declared(declared) => &declared.name,
        }
    }

    /// Roles a caller needs one of; empty: any authenticated caller.
    pub fn roles(&self) -> &[String] {
        match self {
            Self::Name(_) => &[],
            Self::Declared(declared) => &declared.roles,
        }
    }

    /// Whether the single argument must be a signed envelope.
    pub fn signed(&self) -> bool {
        matches!(self, Self::Declared(declared) if declared.signed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
/// A connection event forwarded to an upstream.
pub enum UpstreamEvent {
    /// A connection completed its handshake.
    Connected,
    /// A connection ended.
    Disconnected,
}

impl UpstreamEvent {
    /// Its name in configuration and in the request body.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// Bounds of `timeout_ms`: long enough for a real backend, short enough that a hung one
/// cannot hold a caller's invocation slot for minutes.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=300_000;
/// Bound of `max_response_bytes` (an answer is read into memory).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Bound of `max_arguments` and `max_concurrent_calls`.
const MAX_ARGUMENTS: usize = 1_024;
const MAX_CONCURRENT_CALLS: usize = 100_000;
/// Longest method name.
const MAX_NAME_CHARS: usize = 128;

type Checked = Result<(), SettingsError>;

/// Checks every `[[upstream]]` table, and that no method is forwarded twice on one hub.
pub(super) fn validate(upstreams: &[UpstreamSettings]) -> Checked {
    let mut seen = std::collections::HashSet::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        let key = |k: &str| format!("upstream[{i}].{k}");
        upstream.validate(&key)?;
        for method in &upstream.methods {
            let name = (upstream.hub.as_str(), method.name().to_ascii_lowercase());
            if !seen.insert(name) {
                return fail(
                    &key("methods"),
                    &format!(
                        "`{}` is forwarded twice on hub `{}`",
                        method.name(),
                        upstream.hub
                    ),
                );
            }
        }
    }
    Ok(())
}

fn fail(key: &str, rule: &str) -> Checked {
    Err(SettingsError::invalid(key, rule))
}

impl UpstreamSettings {
    fn validate(&self, key: &dyn Fn(&str) -> String) -> Checked {
        if self.hub.trim().is_empty() {
            return fail(&key("hub"), "must not be empty");
        }
        valid_url(&self.url).map_err(|rule| SettingsError::invalid(key("url"), rule))?;
        if self.secret_file.as_os_str().is_empty() {
            return fail(
                &key("secret_file"),
                "is required (the key that signs requests)",
            );
        }
        if self.methods.is_empty() && self.events.is_empty() {
            return fail(
                &key("methods"),
                "must name at least one method (or set events)",
            );
        }
        for method in &self.methods {
            method.validate(&key("methods"))?;
        }
        self.validate_bounds(key)
    }

    fn validate_bounds(&self, key: &dyn Fn(&str) -> String) -> Checked {
        if !TIMEOUT_MS.contains(&self.timeout_ms) {
            return fail(&key("timeout_ms"), "must be between 10 and 300000");
        }
        let bounds = [
            (
                "max_response_bytes",
                self.max_response_bytes,
                MAX_RESPONSE_BYTES,
            ),
            (
                "max_concurrent_calls",
                self.max_concurrent_calls,
                MAX_CONCURRENT_CALLS,
            ),
            ("max_arguments", self.max_arguments, MAX_ARGUMENTS),
        ];
        for (name, value, max) in bounds {
            if value == 0 || value > max {
                return fail(&key(name), &format!("must be between 1 and {max}"));
            }
        }
        Ok(())
    }
}

impl UpstreamMethod {
    fn validate(&self, key: &str) -> Checked {
        let name = self.name();
        let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if name.is_empty() || name.len() > MAX_NAME_CHARS || !name.chars().all(valid_char) {
            return fail(
                key,
                &format!("`{name}`: a method name is 1 to {MAX_NAME_CHARS} letters, digits or `_`"),
            );
        }
        if self.roles().iter().any(|role| role.trim().is_empty()) {
            return fail(key, &format!("`{name}`: a role must not be empty"));
        }
        Ok(())
    }
}

/// An absolute http or https URL with a host.
fn valid_url(url: &str) -> Result<(), &'static str> {
    let rule = "must be an http:// or https:// URL with a host";
    let uri: actix_web::http::Uri = url.parse().map_err(|_| rule)?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(rule);
    }
    Ok(())
}
