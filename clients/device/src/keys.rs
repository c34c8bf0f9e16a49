//! The message keys a `Command` may be signed with, around a token renewal.
//!
//! Each device token comes with its own message key, and the server signs with the key of the
//! token the connection holds at the moment it sends. When the device moves its connection to a
//! new token (`RefreshToken`), commands signed with the old key may still be in flight, and the
//! server may start using the new key before the device has seen the refresh's completion. So
//! for a short time more than one key is valid; every one of them belongs to this device, and
//! the nonce cache is shared, so accepting any of them admits nothing a single key would refuse.
//!
//! Results and telemetry are always signed with [`SessionKeys::signing_key`]: the key of the
//! token the server currently holds for the connection.

use signet_protocol::envelope::MessageKey;
use std::time::Duration;
use tokio::time::Instant;

/// Keys retired by a renewal stay accepted this long: an envelope lives at most the verifier's
/// maximum lifetime (60 s) plus the clock skew (5 s).
pub const RETIRED_KEY_GRACE: Duration = Duration::from_secs(65);

#[derive(Debug, Clone)]
pub struct SessionKeys {
    current: MessageKey,
    /// The key of a token being moved onto the connection, not yet confirmed.
    staged: Option<MessageKey>,
    /// Keys of earlier tokens of this connection, each accepted until its instant.
    retired: Vec<(MessageKey, Instant)>,
}

impl SessionKeys {
    pub fn new(current: MessageKey) -> Self {
        Self {
            current,
            staged: None,
            retired: Vec::new(),
        }
    }

    /// The key to sign with: the one of the token the server holds for the connection.
    pub fn signing_key(&self) -> &MessageKey {
        &self.current
    }

    /// A renewal is under way: commands signed with `next` are accepted from now on.
    pub fn stage(&mut self, next: MessageKey) {
        self.staged = Some(next);
    }

    /// The server confirmed the renewal: sign with the staged key, keep accepting the old one
    /// for [`RETIRED_KEY_GRACE`].
    pub fn promote(&mut self, now: Instant) {
        if let Some(next) = self.staged.take() {
            let old = std::mem::replace(&mut self.current, next);
            self.retired.push((old, now + RETIRED_KEY_GRACE));
        }
        self.retired.retain(|(_, until)| *until > now);
    }

    /// The renewal failed: forget the staged key.
    pub fn discard_staged(&mut self) {
        self.staged = None;
    }

    /// Every key a command received at `now` may be signed with, the signing key first.
    pub fn verification_keys(&self, now: Instant) -> Vec<&MessageKey> {
        std::iter::once(&self.current)
            .chain(self.staged.as_ref())
            .chain(
                self.retired
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(key, _)| key),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_protocol::envelope::derive_message_key;

    fn key(session: &str) -> MessageKey {
        derive_message_key(b"master", session)
    }

    fn bytes(keys: Vec<&MessageKey>) -> Vec<[u8; 32]> {
        keys.into_iter().map(|k| *k.as_bytes()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_accepts_both_keys_for_a_while_then_only_the_new_one() {
        let (a, b) = (key("a"), key("b"));
        let mut keys = SessionKeys::new(a.clone());
        let now = Instant::now();
        assert_eq!(bytes(keys.verification_keys(now)), [*a.as_bytes()]);

        keys.stage(b.clone());
        assert_eq!(keys.signing_key().as_bytes(), a.as_bytes());
        assert_eq!(
            bytes(keys.verification_keys(now)),
            [*a.as_bytes(), *b.as_bytes()]
        );

        keys.promote(now);
        assert_eq!(keys.signing_key().as_bytes(), b.as_bytes());
        let later = now + RETIRED_KEY_GRACE - Duration::from_millis(1);
        assert_eq!(
            bytes(keys.verification_keys(later)),
            [*b.as_bytes(), *a.as_bytes()]
        );
        let after = now + RETIRED_KEY_GRACE;
        assert_eq!(bytes(keys.verification_keys(after)), [*b.as_bytes()]);
        keys.promote(after);
        assert!(keys.retired.is_empty());
    }

    #[test]
    fn a_failed_renewal_keeps_the_old_key_only() {
        let mut keys = SessionKeys::new(key("a"));
        keys.stage(key("b"));
        keys.discard_staged();
        keys.promote(Instant::now());
        assert_eq!(keys.signing_key().as_bytes(), key("a").as_bytes());
        assert_eq!(keys.verification_keys(Instant::now()).len(), 1);
    }
}
