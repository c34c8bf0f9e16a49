//! Signed command envelopes: the server's side.
//!
//! The format, signing, verification and the in-memory nonce store are pure and live in the
//! `signet-protocol` crate, which the device shares (re-exported here, so `crate::envelope::...`
//! names them as before). What holds the server's secret stays here: [`EnvelopeService`], what
//! the hub calls: per-session keys, `open` and `seal`.
//!
//! `docs/envelope.md` is the protocol for other implementers.

mod service;

pub use signet_protocol::envelope::{
    derive_message_key, format, key, nonce, sign, unix_now_ms, verify, Envelope, EnvelopeBuilder,
    EnvelopeError, EnvelopeLimits, EnvelopeVerifier, InMemoryNonceStore, MalformedReason,
    MessageKey, MessageKeyError, NonceStore, NonceStoreError, SigningInput, VerifiedEnvelope,
    DEFAULT_NONCE_CAPACITY, MESSAGE_KEY_LEN,
};

pub use service::EnvelopeService;
