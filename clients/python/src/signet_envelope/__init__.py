"""Signet signed command envelopes (v1), standard library only.

Signs and checks the envelopes that Signet's signed hub methods take as their only argument
(``SendCommand``, ``CommandResult``, ``ReportTelemetry``, ``EchoSigned``, ...). The format and the
order of the checks are those of ``docs/envelope.md`` in the Signet repository; the vectors in
``tests/vectors/envelope.json`` are shared with the Rust server and the JavaScript client.
"""

from ._envelope import (
    DEFAULT_LIMITS,
    MESSAGE_KEY_BYTES,
    SIGNING_DOMAIN,
    EnvelopeLimits,
    EnvelopeRejected,
    NonceCache,
    VerifiedEnvelope,
    base64url_decode,
    base64url_encode,
    derive_message_key,
    message_key,
    sign_envelope,
    signing_input,
    unix_now_ms,
    verify_envelope,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "MESSAGE_KEY_BYTES",
    "SIGNING_DOMAIN",
    "EnvelopeLimits",
    "EnvelopeRejected",
    "NonceCache",
    "VerifiedEnvelope",
    "base64url_decode",
    "base64url_encode",
    "derive_message_key",
    "message_key",
    "sign_envelope",
    "signing_input",
    "unix_now_ms",
    "verify_envelope",
]
