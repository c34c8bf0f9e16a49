//! Signed command envelopes: the format, signing, verification and replay detection.
//!
//! Hub methods that act on the physical world take one argument: an envelope carrying the command
//! as JSON text, signed with HMAC-SHA256 under a key derived for the caller's login session,
//! bound to the hub path and method name, limited in lifetime and usable once. A stolen
//! connection token alone therefore cannot send commands, and a captured command cannot be sent
//! again or to another method. `docs/envelope.md` is the protocol for other implementers.
//!
//! - [`key`]: per-session message keys and their derivation
//! - [`format`][mod@format]: the wire format, the signing input, signing and building envelopes
//! - [`verify`]: the ordered checks and their client-visible codes
//! - [`nonce`]: the nonce store behind replay detection (a trait, and the bounded in-memory
//!   store the server and the device use)

pub mod format;
pub mod key;
pub mod nonce;
pub mod verify;

#[cfg(test)]
mod vectors;

pub use format::{sign, unix_now_ms, Envelope, EnvelopeBuilder, MalformedReason, SigningInput};
pub use key::{derive_message_key, MessageKey, MessageKeyError, MESSAGE_KEY_LEN};
pub use nonce::{InMemoryNonceStore, NonceStore, NonceStoreError, DEFAULT_NONCE_CAPACITY};
pub use verify::{EnvelopeError, EnvelopeLimits, EnvelopeVerifier, VerifiedEnvelope};
