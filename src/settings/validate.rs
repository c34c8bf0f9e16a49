//! The rules settings must follow, checked once at start-up: each section checks its own keys,
//! and [`Settings::validate`] adds the rules that span sections. Every refusal names the key
//! and the rule.

use super::{
    AuditSettings, EnvelopeSettings, ExternalIssuer, HomeSettings, HubSettings, IdentitySettings,
    JwtSettings, MetricsSettings, Secret, ServerSettings, Settings, SettingsError, TlsSettings,
    TransportSettings,
};

/// Smallest accepted HMAC secret, in bytes: a security floor (RFC 7518 for HS256), not a
/// setting.
pub const MIN_SECRET_BYTES: usize = 32;

type Checked = Result<(), SettingsError>;

fn fail(key: &str, rule: &str) -> Checked {
    Err(SettingsError::invalid(key, rule))
}

/// Refuses the first of `values` that is zero.
fn positive<const N: usize>(values: [(&str, u64); N]) -> Checked {
    match values.into_iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => fail(key, "must be greater than zero"),
        None => Ok(()),
    }
}

fn not_empty(key: &str, value: &str) -> Checked {
    if value.trim().is_empty() {
        return fail(key, "must not be empty");
    }
    Ok(())
}

fn long_enough(key: &str, secret: Option<&Secret>) -> Checked {
    if secret.is_some_and(|secret| secret.len() < MIN_SECRET_BYTES) {
        return fail(key, "must be at least 32 bytes");
    }
    Ok(())
}

fn count(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

impl Settings {
    /// Checks every rule that does not need the file system. Names the key and the rule.
    pub fn validate(&self) -> Checked {
        self.jwt.validate()?;
        self.envelope.validate()?;
        self.hub.validate()?;
        self.transports.validate()?;
        self.identity.validate()?;
        self.home.validate()?;
        self.server.validate()?;
        self.metrics.validate()?;
        self.audit.validate()?;
        self.tls.validate()?;
        self.store.validate()?;
        self.cluster.validate()?;
        super::upstream::validate(&self.upstream)?;
        if self.metrics.listen == Some(self.server.listen) && self.server.listen.port() != 0 {
            return fail(
                "metrics.listen",
                "must differ from server.listen (unset it to serve /metrics there, for admins)",
            );
        }
        Ok(())
    }
}

impl JwtSettings {
    fn validate(&self) -> Checked {
        not_empty("jwt.issuer", &self.issuer)?;
        not_empty("jwt.audience", &self.audience)?;
        if !(5..=1440).contains(&self.access_token_lifetime_minutes) {
            return fail(
                "jwt.access_token_lifetime_minutes",
                "must be between 5 and 1440 minutes",
            );
        }
        if !(1..=365).contains(&self.refresh_token_lifetime_days) {
            return fail(
                "jwt.refresh_token_lifetime_days",
                "must be between 1 and 365 days",
            );
        }
        long_enough("jwt.secret", self.secret.as_ref())?;
        for (i, issuer) in self.external.iter().enumerate() {
            issuer.validate(&format!("jwt.external[{i}]"))?;
        }
        Ok(())
    }
}

impl ExternalIssuer {
    /// `prefix` names this issuer's table, e.g. `jwt.external[0]`.
    fn validate(&self, prefix: &str) -> Checked {
        let key = |k: &str| format!("{prefix}.{k}");
        not_empty(&key("issuer"), &self.issuer)?;
        not_empty(&key("audience"), &self.audience)?;
        match (&self.pem_file, &self.jwks_file) {
            (Some(_), None) => {
                if self.algorithm.is_none() {
                    return fail(&key("algorithm"), "is required with pem_file");
                }
                if self.kid.as_deref().is_none_or(str::is_empty) {
                    return fail(&key("kid"), "is required with pem_file");
                }
                Ok(())
            }
            (None, Some(_)) => Ok(()),
            _ => fail(&key("pem_file"), "exactly one of pem_file or jwks_file"),
        }
    }
}

impl EnvelopeSettings {
    fn validate(&self) -> Checked {
        long_enough("envelope.secret", self.secret.as_ref())?;
        positive([
            ("envelope.max_lifetime_secs", self.max_lifetime_secs),
            ("envelope.max_message_bytes", count(self.max_message_bytes)),
            ("envelope.nonce_capacity", self.nonce_capacity),
            (
                "envelope.max_nonces_per_session",
                self.max_nonces_per_session,
            ),
            ("envelope.forward_lifetime_secs", self.forward_lifetime_secs),
        ])?;
        if self.forward_lifetime_secs > self.max_lifetime_secs {
            return fail(
                "envelope.forward_lifetime_secs",
                "must not exceed envelope.max_lifetime_secs",
            );
        }
        Ok(())
    }
}

impl HubSettings {
    fn validate(&self) -> Checked {
        positive([
            (
                "hub.keep_alive_interval_secs",
                self.keep_alive_interval_secs,
            ),
            ("hub.client_timeout_secs", self.client_timeout_secs),
            ("hub.handshake_timeout_secs", self.handshake_timeout_secs),
            ("hub.max_message_bytes", count(self.max_message_bytes)),
            (
                "hub.max_parallel_invocations",
                count(self.max_parallel_invocations),
            ),
            (
                "hub.max_streams_per_connection",
                count(self.max_streams_per_connection),
            ),
            ("hub.stream_buffer_items", count(self.stream_buffer_items)),
            (
                "hub.outbound_queue_messages",
                count(self.outbound_queue_messages),
            ),
            ("hub.max_connections", count(self.max_connections)),
            (
                "hub.max_connections_per_user",
                count(self.max_connections_per_user),
            ),
            (
                "hub.max_groups_per_connection",
                count(self.max_groups_per_connection),
            ),
            ("hub.negotiate_timeout_secs", self.negotiate_timeout_secs),
        ])?;
        if self.client_timeout_secs <= self.keep_alive_interval_secs {
            return fail(
                "hub.client_timeout_secs",
                "must be greater than hub.keep_alive_interval_secs (clients ping at that interval)",
            );
        }
        Ok(())
    }
}

impl TransportSettings {
    fn validate(&self) -> Checked {
        positive([
            ("transports.poll_timeout_secs", self.poll_timeout_secs),
            (
                "transports.disconnect_timeout_secs",
                self.disconnect_timeout_secs,
            ),
            (
                "transports.stateful_reconnect_buffer_bytes",
                count(self.stateful_reconnect_buffer_bytes),
            ),
        ])?;
        if !(self.websockets || self.server_sent_events || self.long_polling) {
            return fail(
                "transports.websockets",
                "at least one of websockets, server_sent_events and long_polling must be enabled",
            );
        }
        Ok(())
    }
}

impl IdentitySettings {
    fn validate(&self) -> Checked {
        positive([
            (
                "identity.login_max_failures",
                u64::from(self.login_max_failures),
            ),
            (
                "identity.login_max_failures_per_address",
                u64::from(self.login_max_failures_per_address),
            ),
            (
                "identity.login_failure_window_secs",
                self.login_failure_window_secs,
            ),
            (
                "identity.login_max_backoff_secs",
                self.login_max_backoff_secs,
            ),
            (
                "identity.max_concurrent_password_hashes",
                count(self.max_concurrent_password_hashes),
            ),
            (
                "identity.login_limiter_capacity",
                self.login_limiter_capacity,
            ),
            (
                "identity.password_hash_memory_kib",
                u64::from(self.password_hash_memory_kib),
            ),
            (
                "identity.password_hash_iterations",
                u64::from(self.password_hash_iterations),
            ),
            (
                "identity.password_hash_parallelism",
                u64::from(self.password_hash_parallelism),
            ),
            (
                "identity.max_devices_per_user",
                u64::from(self.max_devices_per_user),
            ),
            (
                "identity.max_sessions_per_user",
                u64::from(self.max_sessions_per_user),
            ),
            (
                "identity.revocation_event_capacity",
                count(self.revocation_event_capacity),
            ),
        ])?;
        if let Err(e) = argon2::Params::new(
            self.password_hash_memory_kib,
            self.password_hash_iterations,
            self.password_hash_parallelism,
            None,
        ) {
            return fail(
                "identity.password_hash_memory_kib",
                &format!(
                    "argon2 rejects these parameters: {e} (memory must be at least 8 KiB per lane)"
                ),
            );
        }
        Ok(())
    }
}

impl HomeSettings {
    fn validate(&self) -> Checked {
        positive([
            ("home.max_pending_commands", self.max_pending_commands),
            (
                "home.max_pending_commands_per_user",
                self.max_pending_commands_per_user,
            ),
            ("home.command_timeout_secs", self.command_timeout_secs),
        ])
    }
}

impl ServerSettings {
    fn validate(&self) -> Checked {
        positive([
            ("server.workers", count(self.workers)),
            ("server.backlog", u64::from(self.backlog)),
            ("server.readiness_timeout_secs", self.readiness_timeout_secs),
            ("server.shutdown_timeout_secs", self.shutdown_timeout_secs),
            (
                "server.max_request_body_bytes",
                count(self.max_request_body_bytes),
            ),
        ])?;
        if i32::try_from(self.backlog).is_err() {
            return fail("server.backlog", "must be at most 2147483647");
        }
        let origin_ok = |origin: &String| {
            (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
        };
        if !self.allowed_origins.iter().all(origin_ok) {
            return fail(
                "server.allowed_origins",
                "each origin is scheme://host[:port] with no trailing slash",
            );
        }
        Ok(())
    }
}

impl MetricsSettings {
    fn validate(&self) -> Checked {
        positive([("metrics.chart_interval_secs", self.chart_interval_secs)])?;
        if self.chart_window_secs < self.chart_interval_secs
            || self.chart_window_secs / self.chart_interval_secs.max(1) > 10_000
        {
            return fail(
                "metrics.chart_window_secs",
                "must be at least metrics.chart_interval_secs and at most 10000 intervals",
            );
        }
        Ok(())
    }
}

impl AuditSettings {
    fn validate(&self) -> Checked {
        positive([
            ("audit.max_file_bytes", self.max_file_bytes),
            ("audit.max_files", u64::from(self.max_files)),
        ])
    }
}

impl TlsSettings {
    fn validate(&self) -> Checked {
        positive([("tls.reload_interval_secs", self.reload_interval_secs)])?;
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return fail("tls.key_file", "is required with tls.cert_file"),
            (None, Some(_)) => return fail("tls.cert_file", "is required with tls.key_file"),
            _ => {}
        }
        if self.client_ca_file.is_some() && !self.enabled() {
            return fail(
                "tls.client_ca_file",
                "needs tls.cert_file and tls.key_file (mutual TLS is TLS)",
            );
        }
        Ok(())
    }
}
