//! Signet: a SignalR-compatible, authenticated real-time hub server.

pub mod protocol;
