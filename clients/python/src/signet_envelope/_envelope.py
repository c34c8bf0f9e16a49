"""Signing and verifying Signet envelopes; see the package docstring and docs/envelope.md."""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

#: First line of every signing input.
SIGNING_DOMAIN = "signet-envelope-v1"
#: Length of a message key in bytes (43 characters of base64url).
MESSAGE_KEY_BYTES = 32

_MESSAGE_KEY_DOMAIN = "signet-msgkey-v1:"
_NONCE_MIN_BYTES = 16
_NONCE_MAX_BYTES = 64
_SIGNATURE_BYTES = 32
_DEFAULT_NONCE_BYTES = 24
_DEFAULT_LIFETIME_MS = 30_000
# Timestamps above 2^53 - 1 are refused: a JavaScript peer could not hold them exactly.
_MAX_TIMESTAMP_MS = (1 << 53) - 1
# The server's JSON parser refuses the 128th level of nested arrays and objects.
_MAX_JSON_DEPTH = 127
_FIELDS = frozenset(("issuedAt", "expiry", "nonce", "message", "signature"))
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

Key = Union[bytes, bytearray, str]


@dataclass(frozen=True)
class EnvelopeLimits:
    """What a verifier accepts; the defaults are the server's."""

    max_lifetime_ms: int = 60_000
    skew_ms: int = 5_000
    max_message_bytes: int = 16 * 1024


DEFAULT_LIMITS = EnvelopeLimits()


class EnvelopeRejected(Exception):
    """An envelope failed a check. ``code`` is the server's code for it (``malformed``,
    ``lifetime_too_long``, ``not_yet_valid``, ``expired``, ``bad_signature``, ``replayed_nonce``,
    ``nonce_store_unavailable``); ``reason`` says which part was wrong."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"envelope rejected ({code}): {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class VerifiedEnvelope:
    """An envelope that passed every check: ``message`` exactly as signed, ``command`` parsed."""

    message: str
    command: Any
    issued_at: int
    expiry: int
    nonce: str


class NonceCache:
    """The accepted nonces of one message key, each kept until its envelope's ``expiry + skew``
    (after that the time check refuses the envelope anyway).

    Bounded: when ``capacity`` unexpired nonces are held, a new one is refused with
    ``nonce_store_unavailable`` instead of forgetting a live one, which would let its envelope be
    replayed. Safe to share between threads (signalrcore calls handlers on its own thread).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._until: dict[str, int] = {}
        self._expiries: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

    def insert_if_absent(self, nonce: str, retain_until_ms: int, now_ms: int) -> bool:
        """Records ``nonce`` until ``retain_until_ms``; ``False`` if it is already held.

        Raises :class:`EnvelopeRejected` (``nonce_store_unavailable``) when full."""
        with self._lock:
            while self._expiries and self._expiries[0][0] < now_ms:
                until, old = heapq.heappop(self._expiries)
                if self._until.get(old) == until:
                    del self._until[old]
            if nonce in self._until:
                return False
            if len(self._until) >= self._capacity:
                raise EnvelopeRejected("nonce_store_unavailable", "the nonce cache is full")
            self._until[nonce] = retain_until_ms
            heapq.heappush(self._expiries, (retain_until_ms, nonce))
            return True


def unix_now_ms() -> int:
    """The system clock in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def base64url_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def base64url_decode(text: str) -> bytes:
    """Decodes base64url without padding, strictly: padding, other alphabets and non-zero
    trailing bits raise ``ValueError``, as the server refuses them, so each byte string has one
    accepted spelling."""
    if not isinstance(text, str) or len(text) % 4 == 1 or not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base64url without padding") from error
    if base64url_encode(data) != text:
        raise ValueError("base64url has non-zero trailing bits")
    return data


def message_key(text: str) -> bytes:
    """The 32 key bytes of the ``messageKey`` the server returns at login (base64url)."""
    key = base64url_decode(text)
    if len(key) != MESSAGE_KEY_BYTES:
        raise ValueError(f"a message key is {MESSAGE_KEY_BYTES} bytes")
    return key


def derive_message_key(master_key: bytes, session_id: str) -> str:
    """The server's derivation of a session's message key, as base64url (server side only: the
    master key never leaves the server)."""
    digest = hmac.new(
        bytes(master_key), (_MESSAGE_KEY_DOMAIN + session_id).encode("utf-8"), hashlib.sha256
    ).digest()
    return base64url_encode(digest)


def signing_input(
    hub_path: str, target: str, issued_at: int, expiry: int, nonce: str, message: str
) -> str:
    """The text a signature covers, joined with newlines."""
    return "\n".join((SIGNING_DOMAIN, hub_path, target, str(issued_at), str(expiry), nonce, message))


def sign_envelope(
    key: Key,
    *,
    hub_path: str,
    target: str,
    message: Any,
    lifetime_ms: int = _DEFAULT_LIFETIME_MS,
    now_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Signs a command for hub method ``target`` on ``hub_path`` (e.g. ``/hubs/home``); send the
    result as the method's only argument.

    ``key`` is the ``messageKey`` text from login (or its 32 bytes). ``message`` is JSON text
    (a ``str``, signed exactly as given) or any other JSON value, serialised once, compactly.
    ``nonce`` is 24 random bytes unless given (give one only to reproduce test vectors).
    Raises ``ValueError`` for anything the server would refuse as ``malformed``.
    """
    mac_key = _key_bytes(key)
    _require_bindable(hub_path, "hub_path")
    _require_bindable(target, "target")
    if isinstance(message, str):
        text = message
    else:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    _parse_command(text)
    issued_at = unix_now_ms() if now_ms is None else now_ms
    _require_timestamp(issued_at, "now_ms")
    if not _is_int(lifetime_ms) or lifetime_ms <= 0:
        raise ValueError("lifetime_ms must be a positive integer")
    expiry = issued_at + lifetime_ms
    _require_timestamp(expiry, "now_ms + lifetime_ms")
    if nonce is None:
        nonce = base64url_encode(secrets.token_bytes(_DEFAULT_NONCE_BYTES))
    elif not _NONCE_MIN_BYTES <= len(base64url_decode(nonce)) <= _NONCE_MAX_BYTES:
        raise ValueError(f"nonce must be {_NONCE_MIN_BYTES} to {_NONCE_MAX_BYTES} bytes")
    tag = _mac(mac_key, signing_input(hub_path, target, issued_at, expiry, nonce, text))
    return {
        "issuedAt": issued_at,
        "expiry": expiry,
        "nonce": nonce,
        "message": text,
        "signature": base64url_encode(tag),
    }


def verify_envelope(
    key: Key,
    envelope: Any,
    *,
    hub_path: str,
    target: str,
    now_ms: int | None = None,
    limits: EnvelopeLimits = DEFAULT_LIMITS,
    nonces: NonceCache | None = None,
) -> VerifiedEnvelope:
    """Checks a received envelope (parsed JSON) the way the server does, in the same order and
    with the same codes; raises :class:`EnvelopeRejected` at the first failure.

    Replays (step 5, ``replayed_nonce``) are caught only with a ``nonces`` cache: keep one per
    message key for as long as the key is used. The signature is compared in constant time.
    """
    mac_key = _key_bytes(key)
    now = unix_now_ms() if now_ms is None else now_ms

    # 1. Shape and sizes.
    if not isinstance(envelope, Mapping):
        raise EnvelopeRejected("malformed", "envelope is not a JSON object")
    if set(envelope.keys()) != _FIELDS:
        raise EnvelopeRejected("malformed", "envelope must have exactly the five fields")
    issued_at, expiry = envelope["issuedAt"], envelope["expiry"]
    for name, value in (("issuedAt", issued_at), ("expiry", expiry)):
        if not _is_int(value) or not 0 <= value <= _MAX_TIMESTAMP_MS:
            raise EnvelopeRejected("malformed", f"{name} is not an integer from 0 to 2^53 - 1")
    nonce, message, signature = envelope["nonce"], envelope["message"], envelope["signature"]
    if not all(isinstance(value, str) for value in (nonce, message, signature)):
        raise EnvelopeRejected("malformed", "nonce, message and signature must be strings")
    if not _NONCE_MIN_BYTES <= len(_try_decode(nonce) or b"") <= _NONCE_MAX_BYTES:
        raise EnvelopeRejected("malformed", "nonce must be base64url of 16 to 64 bytes")
    tag = _try_decode(signature)
    if tag is None or len(tag) != _SIGNATURE_BYTES:
        raise EnvelopeRejected("malformed", "signature must be base64url of 32 bytes")
    try:
        message_bytes = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        raise EnvelopeRejected("malformed", "message contains a lone surrogate") from None
    if message_bytes > limits.max_message_bytes:
        raise EnvelopeRejected("malformed", "message is longer than the maximum")
    if expiry <= issued_at:
        raise EnvelopeRejected("malformed", "expiry is not after issuedAt")
    try:
        command = _parse_command(message)
    except ValueError:
        raise EnvelopeRejected("malformed", "message is not JSON text") from None
    if not isinstance(hub_path, str) or not isinstance(target, str):
        raise TypeError("hub_path and target must be strings")
    if "\n" in hub_path or "\n" in target:
        raise EnvelopeRejected("malformed", "hub path or target contains a newline")

    # 2. Lifetime.
    if expiry - issued_at > limits.max_lifetime_ms:
        raise EnvelopeRejected("lifetime_too_long", "lifetime exceeds the maximum")

    # 3. Time window.
    if issued_at > now + limits.skew_ms:
        raise EnvelopeRejected("not_yet_valid", "issued in the future")
    retain_until = expiry + limits.skew_ms
    if now > retain_until:
        raise EnvelopeRejected("expired", "expired")

    # 4. Signature, constant time.
    expected = _mac(mac_key, signing_input(hub_path, target, issued_at, expiry, nonce, message))
    if not hmac.compare_digest(expected, tag):
        raise EnvelopeRejected("bad_signature", "signature does not match")

    # 5. Nonce, last, so that only a correctly signed envelope can use one up.
    if nonces is not None and not nonces.insert_if_absent(nonce, retain_until, now):
        raise EnvelopeRejected("replayed_nonce", "nonce was already used")

    return VerifiedEnvelope(message, command, issued_at, expiry, nonce)


def _mac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _key_bytes(key: Key) -> bytes:
    if isinstance(key, str):
        return message_key(key)
    if isinstance(key, (bytes, bytearray)) and len(key) == MESSAGE_KEY_BYTES:
        return bytes(key)
    raise ValueError(f"key must be the messageKey text or its {MESSAGE_KEY_BYTES} bytes")


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, and JSON's true is not a timestamp.
    return isinstance(value, int) and not isinstance(value, bool)


def _try_decode(text: str) -> bytes | None:
    try:
        return base64url_decode(text)
    except ValueError:
        return None


def _require_bindable(value: Any, name: str) -> None:
    if not isinstance(value, str) or "\n" in value:
        raise ValueError(f"{name} must be a string without newlines")


def _require_timestamp(value: Any, name: str) -> None:
    if not _is_int(value) or not 0 <= value <= _MAX_TIMESTAMP_MS:
        raise ValueError(f"{name} must be an integer of milliseconds from 0 to 2^53 - 1")


def _parse_command(text: str) -> Any:
    """Parses JSON text as strictly as the server (RFC 8259): no NaN or Infinity, no number out
    of a double's range, no lone surrogate, at most 127 levels of nesting. Raises ValueError."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                           parse_int=_finite_int)
    except RecursionError:
        raise ValueError("JSON nests too deeply") from None
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _require_scalar_values(item)
        elif isinstance(item, (list, dict)):
            if depth + 1 > _MAX_JSON_DEPTH:
                raise ValueError("JSON nests too deeply")
            if isinstance(item, dict):
                for name in item:
                    _require_scalar_values(name)
                item = item.values()
            pending.extend((child, depth + 1) for child in item)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _finite_int(text: str) -> int:
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise ValueError("number out of range") from None
    return value


def _require_scalar_values(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("lone surrogate in JSON string") from None
