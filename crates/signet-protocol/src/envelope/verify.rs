//! Checking a received envelope, cheapest and least trusting checks first.
//!
//! Order, each failure reported as its code:
//! 1. shape and sizes (`malformed`), including `expiry` after `issuedAt` and the message being JSON
//! 2. lifetime within the maximum (`lifetime_too_long`)
//! 3. `issuedAt <= now + skew` (`not_yet_valid`), `now <= expiry + skew` (`expired`)
//! 4. the signature, in constant time (`bad_signature`)
//! 5. the nonce, recorded until `expiry + skew` (`replayed_nonce`; `nonce_quota_exceeded` when
//!    the session already holds its quota of unexpired nonces)
//!
//! The nonce comes last so that only a correctly signed envelope can use one up: a forger who
//! sees a nonce go by cannot burn it ahead of the real sender.

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

use super::format::{Envelope, MalformedReason};
use super::key::MessageKey;
use super::nonce::{NonceStore, NonceStoreError};

/// Bounds on what the verifier accepts. Every field is configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeLimits {
    /// Longest allowed `expiry - issuedAt`. Also bounds how long each nonce is remembered.
    pub max_lifetime: Duration,
    /// Disagreement tolerated between the sender's clock and ours, in both directions.
    pub clock_skew: Duration,
    /// Longest `message`, in UTF-8 bytes.
    pub max_message_bytes: usize,
}

impl Default for EnvelopeLimits {
    /// 60 s lifetime, 5 s skew, 16 KiB message: a command is sent the moment it is made, and a
    /// minute covers a slow network without leaving old commands usable for long.
    fn default() -> Self {
        Self {
            max_lifetime: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            max_message_bytes: 16 * 1024,
        }
    }
}

/// Why an envelope was refused. [`EnvelopeError::code`] is what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed envelope: {0}")]
    Malformed(#[from] MalformedReason),
    #[error("envelope lifetime of {lifetime_ms} ms exceeds the maximum of {max_ms} ms")]
    LifetimeTooLong { lifetime_ms: u64, max_ms: u64 },
    #[error("envelope issued at {issued_at} is ahead of the server clock {now}")]
    NotYetValid { issued_at: u64, now: u64 },
    #[error("envelope expired at {expiry}, server clock is {now}")]
    Expired { expiry: u64, now: u64 },
    #[error("envelope signature does not match")]
    BadSignature,
    #[error("envelope nonce was already used")]
    ReplayedNonce,
    /// The sender's session holds its quota of unexpired nonces: it sends faster than the
    /// server lets one session send; other sessions are unaffected.
    #[error("the session's nonce quota is used up")]
    NonceQuotaExceeded,
    /// The nonce could not be recorded, so the envelope is refused: accepting it would let it be
    /// replayed. A full store answers `nonce_store_unavailable`; a shared store that cannot be
    /// reached (Redis, with several nodes) `replay_check_unavailable`.
    #[error("nonce store failed")]
    NonceStore(#[source] NonceStoreError),
}

impl EnvelopeError {
    /// The stable, client-visible code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::LifetimeTooLong { .. } => "lifetime_too_long",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
            Self::BadSignature => "bad_signature",
            Self::ReplayedNonce => "replayed_nonce",
            Self::NonceQuotaExceeded => "nonce_quota_exceeded",
            Self::NonceStore(NonceStoreError::Unavailable(_)) => "replay_check_unavailable",
            Self::NonceStore(_) => "nonce_store_unavailable",
        }
    }
}

/// An envelope that passed every check. Its message was signed for this hub and target by the
/// holder of the key, and has not been accepted before.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedEnvelope<'a> {
    message: &'a str,
    command: Value,
    issued_at: u64,
    expiry: u64,
    nonce: &'a str,
}

impl<'a> VerifiedEnvelope<'a> {
    /// The message text exactly as signed.
    pub fn message(&self) -> &'a str {
        self.message
    }

    /// The message parsed as JSON.
    pub fn command(&self) -> &Value {
        &self.command
    }

    pub fn into_command(self) -> Value {
        self.command
    }

    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    pub fn nonce(&self) -> &'a str {
        self.nonce
    }
}

/// Verifies envelopes against configured limits and a shared nonce store.
#[derive(Clone)]
pub struct EnvelopeVerifier {
    limits: EnvelopeLimits,
    nonces: Arc<dyn NonceStore>,
}

impl std::fmt::Debug for EnvelopeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeVerifier")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl EnvelopeVerifier {
    pub fn new(limits: EnvelopeLimits, nonces: Arc<dyn NonceStore>) -> Self {
        Self { limits, nonces }
    }

    pub fn limits(&self) -> &EnvelopeLimits {
        &self.limits
    }

    /// Verifies `envelope`, sent by the session owning `key` as the single argument of hub method
    /// `target` on `hub_path`, at Unix time `now_ms`.
    ///
    /// `scope` partitions the nonce store: pass the session id (or another id of the message
    /// key), so the same session replaying on a second connection is caught while different
    /// sessions never collide.
    ///
    /// `now_ms` should come from [`unix_now_ms`](super::unix_now_ms): the in-memory nonce store
    /// times retention by the system clock, and a `now_ms` far ahead of it would let a nonce be
    /// forgotten while its envelope is still accepted.
    pub async fn verify<'v>(
        &self,
        envelope: &'v Value,
        key: &MessageKey,
        hub_path: &str,
        target: &str,
        scope: &str,
        now_ms: u64,
    ) -> Result<VerifiedEnvelope<'v>, EnvelopeError> {
        // 1. Shape and sizes.
        let parsed = Envelope::parse(envelope)?;
        if parsed.message.len() > self.limits.max_message_bytes {
            return Err(MalformedReason::MessageTooLarge.into());
        }
        // An expiry at or before the issue time is not a short lifetime but an inconsistent
        // envelope, so it is `malformed` rather than `lifetime_too_long`.
        let lifetime_ms = parsed
            .expiry
            .checked_sub(parsed.issued_at)
            .filter(|lifetime| *lifetime > 0)
            .ok_or(MalformedReason::NonPositiveLifetime)?;
        let command: Value =
            serde_json::from_str(parsed.message).map_err(|_| MalformedReason::MessageNotJson)?;
        let input = parsed.signing_input(hub_path, target);
        if !input.is_unambiguous() {
            return Err(MalformedReason::UnsignableBinding.into());
        }

        // 2. Lifetime.
        let max_ms = duration_ms(self.limits.max_lifetime);
        if lifetime_ms > max_ms {
            return Err(EnvelopeError::LifetimeTooLong {
                lifetime_ms,
                max_ms,
            });
        }

        // 3. Time window.
        let skew_ms = duration_ms(self.limits.clock_skew);
        if parsed.issued_at > now_ms.saturating_add(skew_ms) {
            return Err(EnvelopeError::NotYetValid {
                issued_at: parsed.issued_at,
                now: now_ms,
            });
        }
        let retain_until = parsed.expiry.saturating_add(skew_ms);
        if now_ms > retain_until {
            return Err(EnvelopeError::Expired {
                expiry: parsed.expiry,
                now: now_ms,
            });
        }

        // 4. Signature, constant time.
        if !input.verify(key, &parsed.signature) {
            return Err(EnvelopeError::BadSignature);
        }

        // 5. Nonce, remembered for as long as step 3 would still accept the envelope.
        match self
            .nonces
            .insert_if_absent(scope, parsed.nonce, retain_until)
            .await
        {
            Ok(true) => Ok(VerifiedEnvelope {
                message: parsed.message,
                command,
                issued_at: parsed.issued_at,
                expiry: parsed.expiry,
                nonce: parsed.nonce,
            }),
            Ok(false) => Err(EnvelopeError::ReplayedNonce),
            Err(NonceStoreError::ScopeFull { .. }) => Err(EnvelopeError::NonceQuotaExceeded),
            Err(error) => Err(EnvelopeError::NonceStore(error)),
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::format::{sign, unix_now_ms};
    use crate::envelope::nonce::InMemoryNonceStore;
    use crate::envelope::{derive_message_key, EnvelopeBuilder};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use futures_util::future::BoxFuture;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const HUB: &str = "/hubs/home";
    const TARGET: &str = "SendCommand";
    const SCOPE: &str = "session-1";
    const NONCE: &str = "bm9uY2Utbm9uY2Utbm9uY2U";

    fn key() -> MessageKey {
        derive_message_key(b"test master key, 32 bytes long!!", SCOPE)
    }

    fn verifier() -> EnvelopeVerifier {
        EnvelopeVerifier::new(
            EnvelopeLimits::default(),
            Arc::new(InMemoryNonceStore::new(1_000)),
        )
    }

    /// An envelope issued at `issued_at` lasting `lifetime_ms`, signed for `target`.
    fn signed(target: &str, issued_at: u64, lifetime_ms: u64, nonce: &str) -> Value {
        let expiry = issued_at + lifetime_ms;
        let message = r#"{"device":"lamp-1","action":"on"}"#;
        json!({
            "issuedAt": issued_at,
            "expiry": expiry,
            "nonce": nonce,
            "message": message,
            "signature": sign(&key(), HUB, target, issued_at, expiry, nonce, message),
        })
    }

    async fn code_of(envelope: &Value, target: &str, now: u64) -> &'static str {
        match verifier()
            .verify(envelope, &key(), HUB, target, SCOPE, now)
            .await
        {
            Ok(_) => "ok",
            Err(error) => error.code(),
        }
    }

    #[tokio::test]
    async fn accepts_a_correct_envelope_and_exposes_the_command() {
        let now = unix_now_ms();
        let envelope = signed(TARGET, now, 30_000, NONCE);
        let verified = verifier()
            .verify(&envelope, &key(), HUB, TARGET, SCOPE, now)
            .await
            .unwrap();
        assert_eq!(verified.message(), r#"{"device":"lamp-1","action":"on"}"#);
        assert_eq!(verified.command()["device"], "lamp-1");
        assert_eq!(verified.nonce(), NONCE);
        assert_eq!(verified.expiry() - verified.issued_at(), 30_000);
    }

    #[tokio::test]
    async fn malformed_envelopes() {
        let now = unix_now_ms();
        let mut missing = signed(TARGET, now, 30_000, NONCE);
        missing.as_object_mut().unwrap().remove("signature");
        assert_eq!(code_of(&missing, TARGET, now).await, "malformed");

        let inverted = signed(TARGET, now, 0, NONCE);
        assert_eq!(code_of(&inverted, TARGET, now).await, "malformed");

        let mut not_json = signed(TARGET, now, 30_000, NONCE);
        not_json["message"] = json!("lamp on");
        assert_eq!(code_of(&not_json, TARGET, now).await, "malformed");

        let mut too_big = signed(TARGET, now, 30_000, NONCE);
        too_big["message"] = json!(format!("\"{}\"", "x".repeat(16 * 1024)));
        assert_eq!(code_of(&too_big, TARGET, now).await, "malformed");

        let newline_target = signed("Send\nCommand", now, 30_000, NONCE);
        assert_eq!(
            code_of(&newline_target, "Send\nCommand", now).await,
            "malformed"
        );
    }

    #[tokio::test]
    async fn message_at_the_size_limit_is_accepted() {
        let limits = EnvelopeLimits {
            max_message_bytes: 16,
            ..EnvelopeLimits::default()
        };
        let verifier = EnvelopeVerifier::new(limits, Arc::new(InMemoryNonceStore::new(10)));
        let key = key();
        let builder = EnvelopeBuilder::new(&key, HUB, TARGET);
        let fits = builder.build(r#"{"a":"01234567"}"#);
        let over = builder.build(r#"{"a":"012345678"}"#);
        let now = unix_now_ms();
        assert!(verifier
            .verify(&fits, &key, HUB, TARGET, SCOPE, now)
            .await
            .is_ok());
        let error = verifier
            .verify(&over, &key, HUB, TARGET, SCOPE, now)
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            EnvelopeError::Malformed(MalformedReason::MessageTooLarge)
        ));
    }

    #[tokio::test]
    async fn lifetime_too_long() {
        let now = unix_now_ms();
        let at_limit = signed(TARGET, now, 60_000, NONCE);
        assert_eq!(code_of(&at_limit, TARGET, now).await, "ok");
        let over = signed(TARGET, now, 60_001, NONCE);
        assert_eq!(code_of(&over, TARGET, now).await, "lifetime_too_long");
    }

    #[tokio::test]
    async fn time_window_with_skew() {
        let now = unix_now_ms();
        let future_within_skew = signed(TARGET, now + 5_000, 30_000, NONCE);
        assert_eq!(code_of(&future_within_skew, TARGET, now).await, "ok");
        let future = signed(TARGET, now + 5_001, 30_000, NONCE);
        assert_eq!(code_of(&future, TARGET, now).await, "not_yet_valid");

        let expired_within_skew = signed(TARGET, now - 35_000, 30_000, NONCE);
        assert_eq!(code_of(&expired_within_skew, TARGET, now).await, "ok");
        let expired = signed(TARGET, now - 35_001, 30_000, NONCE);
        assert_eq!(code_of(&expired, TARGET, now).await, "expired");
    }

    #[tokio::test]
    async fn bad_signature() {
        let now = unix_now_ms();
        let mut tampered = signed(TARGET, now, 30_000, NONCE);
        tampered["message"] = json!(r#"{"device":"lock-1","action":"open"}"#);
        assert_eq!(code_of(&tampered, TARGET, now).await, "bad_signature");

        let other_key = derive_message_key(b"test master key, 32 bytes long!!", "session-2");
        let envelope = signed(TARGET, now, 30_000, NONCE);
        let error = verifier()
            .verify(&envelope, &other_key, HUB, TARGET, SCOPE, now)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "bad_signature");
    }

    #[tokio::test]
    async fn signature_is_bound_to_the_target() {
        let now = unix_now_ms();
        let envelope = signed("SendCommand", now, 30_000, NONCE);
        assert_eq!(
            code_of(&envelope, "CommandResult", now).await,
            "bad_signature"
        );
    }

    #[tokio::test]
    async fn signature_is_bound_to_the_hub_path() {
        let now = unix_now_ms();
        let envelope = signed(TARGET, now, 30_000, NONCE);
        let error = verifier()
            .verify(&envelope, &key(), "/hubs/admin", TARGET, SCOPE, now)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "bad_signature");
    }

    #[tokio::test]
    async fn every_signature_byte_is_compared() {
        // The comparison itself is hmac's verify_slice (subtle's constant-time equality); this
        // checks that no prefix or suffix of the tag is skipped.
        let now = unix_now_ms();
        let envelope = signed(TARGET, now, 30_000, NONCE);
        let good = URL_SAFE_NO_PAD
            .decode(envelope["signature"].as_str().unwrap())
            .unwrap();
        for index in [0, 15, 31] {
            let mut bad = good.clone();
            bad[index] ^= 0x01;
            let mut forged = envelope.clone();
            forged["signature"] = json!(URL_SAFE_NO_PAD.encode(&bad));
            assert_eq!(code_of(&forged, TARGET, now).await, "bad_signature");
        }
    }

    #[tokio::test]
    async fn replayed_nonce_is_refused_across_connections_of_a_session() {
        let verifier = verifier();
        let now = unix_now_ms();
        let envelope = signed(TARGET, now, 30_000, NONCE);
        assert!(verifier
            .verify(&envelope, &key(), HUB, TARGET, SCOPE, now)
            .await
            .is_ok());
        // The same envelope arriving again, whichever connection carries it.
        let error = verifier
            .verify(&envelope, &key(), HUB, TARGET, SCOPE, now + 10)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "replayed_nonce");
        // Another session's use of the same nonce text is its own business.
        let other_key = derive_message_key(b"test master key, 32 bytes long!!", "session-2");
        let expiry = now + 30_000;
        let message = "{}";
        let other = json!({
            "issuedAt": now, "expiry": expiry, "nonce": NONCE, "message": message,
            "signature": sign(&other_key, HUB, TARGET, now, expiry, NONCE, message),
        });
        assert!(verifier
            .verify(&other, &other_key, HUB, TARGET, "session-2", now)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_forgery_does_not_burn_the_nonce() {
        let verifier = verifier();
        let now = unix_now_ms();
        let genuine = signed(TARGET, now, 30_000, NONCE);
        let mut forged = genuine.clone();
        forged["message"] = json!(r#"{"device":"lock-1","action":"open"}"#);
        let error = verifier
            .verify(&forged, &key(), HUB, TARGET, SCOPE, now)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "bad_signature");
        assert!(verifier
            .verify(&genuine, &key(), HUB, TARGET, SCOPE, now)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn earlier_checks_win_over_later_ones() {
        let now = unix_now_ms();
        // Expired and badly signed: the time check comes first.
        let mut expired_forgery = signed(TARGET, now - 100_000, 30_000, NONCE);
        expired_forgery["message"] = json!("{}");
        assert_eq!(code_of(&expired_forgery, TARGET, now).await, "expired");
        // Too long and not yet valid: lifetime comes first.
        let long_future = signed(TARGET, now + 100_000, 120_000, NONCE);
        assert_eq!(
            code_of(&long_future, TARGET, now).await,
            "lifetime_too_long"
        );
    }

    /// Counts calls and fails every one.
    struct BrokenStore(AtomicUsize);

    impl NonceStore for BrokenStore {
        fn insert_if_absent<'a>(
            &'a self,
            _scope: &'a str,
            _nonce: &'a str,
            _expires_at_ms: u64,
        ) -> BoxFuture<'a, Result<bool, NonceStoreError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Err(NonceStoreError::Unavailable("connection refused".into())) })
        }
    }

    #[tokio::test]
    async fn nonce_store_failure_fails_closed() {
        let store = Arc::new(BrokenStore(AtomicUsize::new(0)));
        let verifier = EnvelopeVerifier::new(EnvelopeLimits::default(), store.clone());
        let now = unix_now_ms();
        let envelope = signed(TARGET, now, 30_000, NONCE);
        let error = verifier
            .verify(&envelope, &key(), HUB, TARGET, SCOPE, now)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "replay_check_unavailable");

        // Nothing that fails an earlier check reaches the store.
        let mut forged = envelope.clone();
        forged["message"] = json!("{}");
        let _ = verifier
            .verify(&forged, &key(), HUB, TARGET, SCOPE, now)
            .await;
        assert_eq!(store.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nonce_is_retained_until_expiry_plus_skew() {
        struct Recording(std::sync::Mutex<Vec<u64>>);
        impl NonceStore for Recording {
            fn insert_if_absent<'a>(
                &'a self,
                _scope: &'a str,
                _nonce: &'a str,
                expires_at_ms: u64,
            ) -> BoxFuture<'a, Result<bool, NonceStoreError>> {
                if let Ok(mut seen) = self.0.lock() {
                    seen.push(expires_at_ms);
                }
                Box::pin(async { Ok(true) })
            }
        }
        let store = Arc::new(Recording(std::sync::Mutex::new(Vec::new())));
        let verifier = EnvelopeVerifier::new(EnvelopeLimits::default(), store.clone());
        let envelope = signed(TARGET, 1_000_000, 30_000, NONCE);
        verifier
            .verify(&envelope, &key(), HUB, TARGET, SCOPE, 1_000_000)
            .await
            .unwrap();
        assert_eq!(*store.0.lock().unwrap(), vec![1_035_000]);
    }

    #[test]
    fn verification_can_run_on_any_tokio_worker() {
        fn assert_send<T: Send>(_: &T) {}
        let verifier = verifier();
        let envelope = json!({});
        let key = key();
        let future = verifier.verify(&envelope, &key, HUB, TARGET, SCOPE, 0);
        assert_send(&future);
    }

    #[test]
    fn codes_are_the_documented_strings() {
        let codes = [
            EnvelopeError::from(MalformedReason::NotAnObject).code(),
            EnvelopeError::LifetimeTooLong {
                lifetime_ms: 2,
                max_ms: 1,
            }
            .code(),
            EnvelopeError::NotYetValid {
                issued_at: 2,
                now: 1,
            }
            .code(),
            EnvelopeError::Expired { expiry: 1, now: 2 }.code(),
            EnvelopeError::BadSignature.code(),
            EnvelopeError::ReplayedNonce.code(),
            EnvelopeError::NonceStore(NonceStoreError::Full { capacity: 1 }).code(),
            EnvelopeError::NonceStore(NonceStoreError::Unavailable("down".into())).code(),
        ];
        assert_eq!(
            codes,
            [
                "malformed",
                "lifetime_too_long",
                "not_yet_valid",
                "expired",
                "bad_signature",
                "replayed_nonce",
                "nonce_store_unavailable",
                "replay_check_unavailable",
            ]
        );
    }
}
