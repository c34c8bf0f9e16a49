//! Exchanging the device id and key for an access token and the message key of its session:
//! `POST /api/auth/device-token {deviceId, deviceKey}` -> `{accessToken, expiresIn, messageKey}`.
//!
//! The exchange is where a device gets its message key: an access token alone never yields it
//! (a leaked token must not sign commands). Each exchange starts a new session with its own
//! message key; the device renews a margin before the token expires so that a live connection
//! never carries an expired token.

use crate::config::Config;
use serde::Deserialize;
use signet_protocol::envelope::MessageKey;
use signet_protocol::secret::Secret;
use std::time::Duration;
use tokio::time::Instant;

pub const DEVICE_TOKEN_PATH: &str = "/api/auth/device-token";

/// Largest token-endpoint answer read; a real one is well under 2 KiB.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// A device access token with its message key, and when it was obtained by our clock.
#[derive(Debug, Clone)]
pub struct DeviceToken {
    access_token: Secret,
    message_key: MessageKey,
    lifetime: Duration,
    obtained_at: Instant,
}

impl DeviceToken {
    pub fn new(access_token: &str, message_key: MessageKey, lifetime: Duration) -> Self {
        Self {
            access_token: Secret::from_text(access_token),
            message_key,
            lifetime,
            obtained_at: Instant::now(),
        }
    }

    /// The bearer token. Named like [`Secret::expose`] so every use stands out.
    pub fn expose_access_token(&self) -> &str {
        // Built from a `&str` in `new`, so always UTF-8.
        std::str::from_utf8(self.access_token.expose()).unwrap_or_default()
    }

    pub fn message_key(&self) -> &MessageKey {
        &self.message_key
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// When the server stops accepting the token (by our clock, counted from the exchange, so
    /// clock differences between device and server do not matter).
    pub fn expires_at(&self) -> Instant {
        self.obtained_at + self.lifetime
    }

    /// When to obtain the next token: [`renewal_margin`] before expiry.
    pub fn renew_at(&self) -> Instant {
        self.expires_at() - renewal_margin(self.lifetime)
    }
}

/// How long before expiry to renew: a fifth of the lifetime, at least 5 s and at most 5 min
/// (3 min for Signet's default 15-minute tokens), never more than half the lifetime.
pub fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 5)
        .clamp(Duration::from_secs(5), Duration::from_secs(300))
        .min(lifetime / 2)
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// 401: the key is wrong, or the device was removed or re-keyed, or its owner was revoked
    /// by an administrator (which ends the keys of all their devices). Retrying cannot help.
    #[error("the server refused the device credentials (401)")]
    Rejected,
    /// 429: try again, not before `retry_after` when the server said.
    #[error("the server is throttling device-token requests (429)")]
    Throttled { retry_after: Option<Duration> },
    /// Another 4xx: a server without this endpoint, or a request it cannot read. Fatal.
    #[error("the device-token endpoint answered {status}: {detail}")]
    Refused { status: u16, detail: String },
    /// 5xx, or a request that did not complete: try again later.
    #[error("the device-token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// A 200 whose body is not what the API promises.
    #[error("the device-token answer is not usable: {0}")]
    BadAnswer(String),
}

impl TokenError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::Unavailable(_) | Self::BadAnswer(_)
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    access_token: String,
    expires_in: u64,
    message_key: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
}

/// Performs exchanges for one device.
pub struct TokenSource {
    client: awc::Client,
    url: String,
    host: String,
    device_id: String,
    device_key: Secret,
}

impl TokenSource {
    pub fn new(client: awc::Client, config: &Config) -> Self {
        Self {
            client,
            url: config.server.join(DEVICE_TOKEN_PATH),
            host: config.server.host().to_string(),
            device_id: config.device_id.clone(),
            device_key: config.device_key.clone(),
        }
    }

    /// One exchange. Never logs or returns the key or the token in an error.
    pub async fn exchange(&self) -> Result<DeviceToken, TokenError> {
        let key = std::str::from_utf8(self.device_key.expose()).unwrap_or_default();
        let body = serde_json::json!({ "deviceId": self.device_id, "deviceKey": key });
        let mut response = self
            .client
            .post(&self.url)
            .send_json(&body)
            .await
            .map_err(|error| {
                TokenError::Unavailable(crate::tls::explain_connect_error(&self.host, &error))
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("Retry-After")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| TokenError::Unavailable(error.to_string()))?;
        match status {
            200 => parse_answer(&bytes),
            401 => Err(TokenError::Rejected),
            429 => Err(TokenError::Throttled { retry_after }),
            408 | 500..=599 => Err(TokenError::Unavailable(format!("status {status}"))),
            _ => Err(TokenError::Refused {
                status,
                detail: error_detail(&bytes),
            }),
        }
    }
}

fn parse_answer(bytes: &[u8]) -> Result<DeviceToken, TokenError> {
    let answer: Answer = serde_json::from_slice(bytes)
        .map_err(|error| TokenError::BadAnswer(format!("not the expected JSON ({error})")))?;
    let message_key = MessageKey::from_base64url(&answer.message_key)
        .map_err(|error| TokenError::BadAnswer(format!("messageKey: {error}")))?;
    if answer.access_token.is_empty() || !answer.access_token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(TokenError::BadAnswer(
            "accessToken is empty or not a header-safe string".into(),
        ));
    }
    if answer.expires_in == 0 {
        return Err(TokenError::BadAnswer("expiresIn is 0".into()));
    }
    Ok(DeviceToken::new(
        &answer.access_token,
        message_key,
        Duration::from_secs(answer.expires_in),
    ))
}

/// The `error` code and `message` of an API error body, for the log.
fn error_detail(bytes: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(ErrorBody { error, message }) => format!(
            "{} {}",
            error.unwrap_or_default(),
            message.unwrap_or_default()
        )
        .trim()
        .to_string(),
        Err(_) => "no JSON error body".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_protocol::envelope::derive_message_key;

    #[test]
    fn margins() {
        let m = |secs| renewal_margin(Duration::from_secs(secs));
        assert_eq!(m(900), Duration::from_secs(180));
        assert_eq!(m(86_400), Duration::from_secs(300));
        assert_eq!(m(60), Duration::from_secs(12));
        assert_eq!(m(20), Duration::from_secs(5));
        assert_eq!(m(6), Duration::from_secs(3));
    }

    #[test]
    fn renews_before_expiry() {
        let key = derive_message_key(b"master", "s");
        let token = DeviceToken::new("t", key, Duration::from_secs(900));
        assert_eq!(
            token.expires_at() - token.renew_at(),
            Duration::from_secs(180)
        );
        assert_eq!(token.expose_access_token(), "t");
        let shown = format!("{token:?}");
        assert!(!shown.contains("\"t\""), "{shown}");
    }

    #[test]
    fn parses_the_documented_answer() {
        let key = derive_message_key(b"master", "s").to_base64url();
        let body = serde_json::json!({"accessToken": "a.b.c", "expiresIn": 900, "messageKey": key});
        let token = parse_answer(body.to_string().as_bytes()).unwrap();
        assert_eq!(token.lifetime(), Duration::from_secs(900));
        assert_eq!(token.message_key().to_base64url(), key);

        let bad_key = serde_json::json!({"accessToken": "a", "expiresIn": 900, "messageKey": "x"});
        assert!(matches!(
            parse_answer(bad_key.to_string().as_bytes()),
            Err(TokenError::BadAnswer(_))
        ));
        let bad_token =
            serde_json::json!({"accessToken": "a\r\nX: y", "expiresIn": 900, "messageKey": key});
        assert!(parse_answer(bad_token.to_string().as_bytes()).is_err());
        assert!(parse_answer(b"[]").is_err());
    }

    #[test]
    fn error_details_for_logs() {
        assert_eq!(
            error_detail(br#"{"error":"not_found","message":"no route"}"#),
            "not_found no route"
        );
        assert_eq!(error_detail(b"<html>"), "no JSON error body");
    }
}
