//! The SignalR hub protocols (JSON, MessagePack) and handshake: pure, no I/O. They live in the
//! `signet-protocol` crate, which the device and the load generator share with the server; this
//! module re-exports them so `crate::protocol::...` names them as before.

pub use signet_protocol::protocol::*;
