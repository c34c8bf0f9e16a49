//! Signed command envelopes: the server's side.
//!
//! The format, signing, verification and the in-memory nonce store are pure and live in the
//! `signet-protocol` crate, which the device shares (what the server uses is re-exported here,
//! so `crate::envelope::...` names it as before). What holds the server's secret stays here: [`EnvelopeService`], what
//! the hub calls: per-session keys, `open` and `seal`.
//!
//! `docs/envelope.md` is the protocol for other implementers.

mod service;

pub use signet_protocol::envelope::{
    derive_message_key, unix_now_ms, EnvelopeBuilder, EnvelopeError, EnvelopeLimits,
    EnvelopeVerifier, InMemoryNonceStore, MessageKey, NonceStore, NonceStoreError,
};

pub use service::EnvelopeService;
