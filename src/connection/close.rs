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

impl CloseReason {
    /// Short code for logs, metrics and audit.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Shutdown => "shutdown",
            Self::Expired => "expired",
            Self::Revoked(_) => "revoked",
            Self::Kicked => "kicked",
            Self::TokenMismatch => "refreshed_away",
            Self::SlowConsumer => "slow_consumer",
            Self::ClientTimeout => "client_timeout",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::HandshakeFailed => "handshake_failed",
            Self::MessageTooLarge => "message_too_large",
            Self::ProtocolError(_) => "protocol_error",
            Self::TransportError => "transport_error",
            Self::TransportTimeout => "transport_timeout",
        }
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

/// Every close reason's code, in a fixed order (the counters below follow it).
pub const CLOSE_CODES: [&str; 15] = [
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
    "other",
];

/// Counts every close by reason (in the server's metrics), and writes the security-relevant
/// ones to the audit log.
#[derive(Debug, Default)]
pub struct CloseStats {
    metrics: crate::metrics::Metrics,
}

impl CloseStats {
    pub fn new(metrics: crate::metrics::Metrics) -> Self {
        metrics.expect_close_reasons(&CLOSE_CODES);
        Self { metrics }
    }

    /// Counts a close, and writes the security-relevant ones to the audit log.
    pub fn record(&self, reason: &CloseReason, connection: &str, sub: &str) {
        let code = reason.code();
        self.metrics.closed(code);
        if matches!(
            reason,
            CloseReason::Expired
                | CloseReason::Revoked(_)
                | CloseReason::Kicked
                | CloseReason::TokenMismatch
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
