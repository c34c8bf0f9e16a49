//! Why a connection ends, and what the client is told: the `error` and `allowReconnect` of the
//! Close message. Every path that ends a connection goes through [`CloseReason`], so the
//! decision of what a client sees is made here once.

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its transport or sent a Close message.
    ClientClosed,
    /// The server is shutting down.
    Shutdown,
    /// The token's `exp` passed.
    Expired,
    /// The token was revoked (logout, session reuse, admin revoke, device removal).
    Revoked(String),
    /// An admin disconnected the user.
    Kicked,
    /// A request on this connection carried another principal's token; the connection is
    /// ended rather than handed over ("refreshed away").
    TokenMismatch,
    /// The outbound queue was full when a send reached it.
    SlowConsumer,
    /// No message from the client within the client timeout.
    ClientTimeout,
    /// No handshake within the handshake timeout.
    HandshakeTimeout,
    /// The handshake was refused; the response already carried the error.
    HandshakeFailed,
    /// A message over the size limit.
    MessageTooLarge,
    /// The client broke the protocol (malformed message, wrong frame type, ...).
    ProtocolError(String),
    /// The transport failed (I/O error, abrupt disconnect).
    TransportError,
    /// No transport attached within the negotiate timeout, or none came back within the
    /// disconnect timeout (a long-polling client that stopped polling, a WebSocket with
    /// stateful reconnect that did not reconnect).
    TransportTimeout,
}

/// Declares [`CloseKind`] and its codes from one list, so that [`CloseKind::ALL`] holds every
/// kind by construction.
macro_rules! close_kinds {
    ($($(#[$doc:meta])* $kind:ident => $code:literal,)+) => {
        /// A [`CloseReason`] without its details: what logs, metrics and audit name it by.
        /// [`CloseReason::kind`] is an exhaustive `match` and every kind is declared with its
        /// code, so a new reason cannot go uncounted: it does not compile until it has both.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum CloseKind {
            $($(#[$doc])* $kind,)+
        }

        impl CloseKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [CloseKind] = &[$(Self::$kind,)+];

            /// Short code for logs, metrics (the `reason` label) and audit.
            pub fn code(self) -> &'static str {
                match self {
                    $(Self::$kind => $code,)+
                }
            }
        }
    };
}

close_kinds! {
    ClientClosed => "client_closed",
    Shutdown => "shutdown",
    Expired => "expired",
    Revoked => "revoked",
    Kicked => "kicked",
    /// [`CloseReason::TokenMismatch`].
    RefreshedAway => "refreshed_away",
    SlowConsumer => "slow_consumer",
    ClientTimeout => "client_timeout",
    HandshakeTimeout => "handshake_timeout",
    HandshakeFailed => "handshake_failed",
    MessageTooLarge => "message_too_large",
    ProtocolError => "protocol_error",
    TransportError => "transport_error",
    TransportTimeout => "transport_timeout",
}

impl CloseReason {
    /// What kind of close this is, without its details.
    pub fn kind(&self) -> CloseKind {
        match self {
            Self::ClientClosed => CloseKind::ClientClosed,
            Self::Shutdown => CloseKind::Shutdown,
            Self::Expired => CloseKind::Expired,
            Self::Revoked(_) => CloseKind::Revoked,
            Self::Kicked => CloseKind::Kicked,
            Self::TokenMismatch => CloseKind::RefreshedAway,
            Self::SlowConsumer => CloseKind::SlowConsumer,
            Self::ClientTimeout => CloseKind::ClientTimeout,
            Self::HandshakeTimeout => CloseKind::HandshakeTimeout,
            Self::HandshakeFailed => CloseKind::HandshakeFailed,
            Self::MessageTooLarge => CloseKind::MessageTooLarge,
            Self::ProtocolError(_) => CloseKind::ProtocolError,
            Self::TransportError => CloseKind::TransportError,
            Self::TransportTimeout => CloseKind::TransportTimeout,
        }
    }

    /// Short code for logs, metrics and audit ([`CloseKind::code`]).
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }

    /// The `error` text of the Close message sent to the client (`None`: a clean close).
    pub fn close_error(&self) -> Option<String> {
        Some(match self {
            // Nobody is there to read it, or the client ended the connection itself.
            Self::ClientClosed
            | Self::HandshakeFailed
            | Self::TransportError
            | Self::TransportTimeout => return None,
            Self::Shutdown => "Server is shutting down.".into(),
            Self::Expired => "Authentication expired".into(),
            Self::Revoked(why) => format!("Authentication revoked: {why}"),
            Self::Kicked => "Disconnected by an administrator".into(),
            Self::TokenMismatch => {
                "Authentication revoked: a token of another user was presented on this connection"
                    .into()
            }
            Self::SlowConsumer => {
                "Connection closed: the client did not keep up with its messages".into()
            }
            Self::ClientTimeout => {
                "Connection closed: no message from the client within the client timeout".into()
            }
            Self::HandshakeTimeout => "Handshake was canceled.".into(),
            Self::MessageTooLarge => {
                "Connection closed with an error. The message exceeded the maximum message size."
                    .into()
            }
            Self::ProtocolError(detail) => {
                format!("Connection closed with an error. {detail}")
            }
        })
    }

    /// Whether the client may reconnect on its own (`allowReconnect`).
    pub fn allow_reconnect(&self) -> bool {
        matches!(
            self,
            Self::Shutdown | Self::Expired | Self::SlowConsumer | Self::ClientTimeout
        )
    }
}

/// A `reason` label no close is counted under any more (a reason outside the string table
/// this index replaced was counted as `other`), kept at zero so that `/metrics` shows the same
/// series as before.
const RETIRED_CLOSE_LABEL: &str = "other";

/// Counts every close by reason (in the server's metrics), and writes the security-relevant
/// ones to the audit log.
#[derive(Debug, Default)]
pub struct CloseStats {
    metrics: crate::metrics::Metrics,
}

impl CloseStats {
    pub fn new(metrics: crate::metrics::Metrics) -> Self {
        let mut labels: Vec<&'static str> = CloseKind::ALL.iter().map(|k| k.code()).collect();
        labels.push(RETIRED_CLOSE_LABEL);
        metrics.expect_close_reasons(&labels);
        Self { metrics }
    }

    /// Counts a close, and writes the security-relevant ones to the audit log.
    pub fn record(&self, reason: &CloseReason, connection: &str, sub: &str) {
        let kind = reason.kind();
        let code = kind.code();
        self.metrics.closed(code);
        if kind == CloseKind::SlowConsumer {
            self.metrics.slow_consumer();
        }
        if matches!(
            kind,
            CloseKind::Expired | CloseKind::Revoked | CloseKind::Kicked | CloseKind::RefreshedAway
        ) {
            tracing::info!(
                target: "audit",
                event = "connection_closed",
                reason = code,
                connection,
                sub,
                "connection closed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `reason` labels `/metrics` shows: dashboards and alerts are written against them.
    #[test]
    fn every_kind_keeps_its_metrics_label() {
        let codes: Vec<&str> = CloseKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(
            codes,
            [
                "client_closed",
                "shutdown",
                "expired",
                "revoked",
                "kicked",
                "refreshed_away",
                "slow_consumer",
                "client_timeout",
                "handshake_timeout",
                "handshake_failed",
                "message_too_large",
                "protocol_error",
                "transport_error",
                "transport_timeout",
            ]
        );
        assert_eq!(CloseReason::TokenMismatch.code(), "refreshed_away");
        assert_eq!(
            CloseReason::Revoked("why".into()).kind(),
            CloseKind::Revoked
        );
    }
}
