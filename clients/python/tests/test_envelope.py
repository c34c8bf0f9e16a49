"""The Python signer and verifier against the vectors shared with the server and the JavaScript
client (tests/vectors/envelope.json), plus the checks the vectors do not spell out.

Run from the repository root: python -m unittest discover -s clients/python/tests
"""

import json
import os
import re
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
try:
    import signet_envelope as se
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(ROOT / "clients" / "python" / "src"))
    import signet_envelope as se

VECTORS = json.loads(
    Path(os.environ.get("SIGNET_ENVELOPE_VECTORS", ROOT / "tests/vectors/envelope.json"))
    .read_text(encoding="utf-8")
)
KEY = VECTORS["messageKeys"][0]["messageKey"]
HUB = "/hubs/home"
TARGET = "SendCommand"
NOW = 1_700_000_000_000


def code_of(envelope, *, target=TARGET, now_ms=NOW, limits=se.DEFAULT_LIMITS, nonces=None):
    try:
        se.verify_envelope(KEY, envelope, hub_path=HUB, target=target, now_ms=now_ms,
                           limits=limits, nonces=nonces)
    except se.EnvelopeRejected as rejected:
        return rejected.code
    return "ok"


def flip_low_bit(char):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(char) ^ 1]


def signed(message='{"device":"lamp-1"}', **options):
    options.setdefault("now_ms", NOW)
    return se.sign_envelope(KEY, hub_path=HUB, target=TARGET, message=message, **options)


class Package(unittest.TestCase):
    def test_the_version_is_the_servers(self):
        def version(path, section):
            text = (ROOT / path).read_text(encoding="utf-8")
            match = re.search(rf'^\[{section}\][^[]*?^version = "([^"]+)"', text, re.M)
            self.assertIsNotNone(match, path)
            return match.group(1)

        server = version("Cargo.toml", "package")
        self.assertEqual(version("clients/python/pyproject.toml", "project"), server)
        self.assertEqual(se.__version__, server)


class Vectors(unittest.TestCase):
    def test_every_vector_is_there(self):
        self.assertGreaterEqual(len(VECTORS["envelopes"]), 3)
        self.assertGreaterEqual(len(VECTORS["messageKeys"]), 3)
        self.assertGreaterEqual(len(VECTORS["verifications"]), 14)

    def test_signing_reproduces_every_envelope(self):
        for vector in VECTORS["envelopes"]:
            with self.subTest(vector["name"]):
                expected = vector["envelope"]
                issued_at, expiry = expected["issuedAt"], expected["expiry"]
                self.assertEqual(
                    se.signing_input(vector["hubPath"], vector["target"], issued_at, expiry,
                                     expected["nonce"], expected["message"]),
                    vector["signingInput"],
                )
                envelope = se.sign_envelope(
                    vector["messageKey"], hub_path=vector["hubPath"], target=vector["target"],
                    message=expected["message"], now_ms=issued_at,
                    lifetime_ms=expiry - issued_at, nonce=expected["nonce"],
                )
                self.assertEqual(envelope, expected)
                verified = se.verify_envelope(
                    vector["messageKey"], json.loads(json.dumps(envelope)),
                    hub_path=vector["hubPath"], target=vector["target"], now_ms=issued_at,
                )
                self.assertEqual(verified.message, expected["message"])
                self.assertEqual(verified.command, json.loads(expected["message"]))

    def test_message_keys_derive_as_the_server_derives_them(self):
        for vector in VECTORS["messageKeys"]:
            with self.subTest(vector["name"]):
                master = bytes.fromhex(vector["masterKeyHex"])
                self.assertEqual(se.derive_message_key(master, vector["sessionId"]),
                                 vector["messageKey"])
                self.assertEqual(len(se.message_key(vector["messageKey"])), 32)

    def test_every_verification_gives_the_expected_code(self):
        for vector in VECTORS["verifications"]:
            with self.subTest(vector["name"]):
                # Parsed from JSON text, as a client receives it: 1700000000000.5 stays a float.
                envelope = json.loads(json.dumps(vector["envelope"]))
                try:
                    verified = se.verify_envelope(
                        vector["messageKey"], envelope, hub_path=vector["hubPath"],
                        target=vector["target"], now_ms=vector["now"], nonces=se.NonceCache(),
                    )
                    code = "ok"
                    self.assertEqual(verified.nonce, envelope["nonce"])
                except se.EnvelopeRejected as rejected:
                    code = rejected.code
                self.assertEqual(code, vector["expect"])


class Verification(unittest.TestCase):
    def test_a_replay_is_refused_and_a_forgery_does_not_burn_the_nonce(self):
        nonces = se.NonceCache()
        envelope = signed()
        forged = dict(envelope, message='{"device":"lock-1"}')
        self.assertEqual(code_of(forged, nonces=nonces), "bad_signature")
        self.assertEqual(code_of(envelope, nonces=nonces), "ok")
        self.assertEqual(code_of(envelope, nonces=nonces), "replayed_nonce")
        self.assertEqual(code_of(signed(), nonces=nonces), "ok")  # a fresh nonce each time

    def test_the_nonce_cache_is_bounded_and_forgets_expired_nonces(self):
        nonces = se.NonceCache(capacity=2)
        self.assertEqual(code_of(signed(), nonces=nonces), "ok")
        self.assertEqual(code_of(signed(), nonces=nonces), "ok")
        self.assertEqual(code_of(signed(), nonces=nonces), "nonce_store_unavailable")
        later = NOW + 30_000 + 5_001  # both kept until expiry + skew, then dropped
        self.assertEqual(code_of(signed(now_ms=later), now_ms=later, nonces=nonces), "ok")
        self.assertEqual(len(nonces), 1)

    def test_shapes_the_server_refuses_are_malformed(self):
        good = signed()
        cases = {
            "not an object": [good],
            "missing field": {k: v for k, v in good.items() if k != "nonce"},
            "boolean timestamp": dict(good, issuedAt=True),
            "float timestamp": dict(good, expiry=float(good["expiry"])),
            "negative timestamp": dict(good, issuedAt=-1),
            "timestamp over 2^53 - 1": dict(good, expiry=2**53),
            "padded nonce": dict(good, nonce=good["nonce"] + "=="),
            "standard alphabet": dict(good, signature="+" + good["signature"][1:]),
            "non-zero trailing bits": dict(good, signature=good["signature"][:-1]
                                           + flip_low_bit(good["signature"][-1])),
            "NaN in message": dict(good, message='{"a":NaN}'),
            "infinite number": dict(good, message='{"a":1e400}'),
            "lone surrogate": dict(good, message='{"a":"\\ud800"}'),
            "not JSON": dict(good, message="lamp on"),
            "too long": dict(good, message=json.dumps("x" * 16_384)),
        }
        for name, envelope in cases.items():
            with self.subTest(name):
                self.assertEqual(code_of(envelope), "malformed")
        self.assertEqual(code_of(good, target="Send\nCommand"), "malformed")

    def test_nesting_is_limited_as_the_server_limits_it(self):
        deepest = signed("[" * 127 + "]" * 127)
        self.assertEqual(code_of(deepest), "ok")
        too_deep = signed("[" * 127 + "]" * 127)
        too_deep["message"] = "[" * 128 + "]" * 128
        self.assertEqual(code_of(too_deep), "malformed")

    def test_limits_are_the_callers(self):
        limits = se.EnvelopeLimits(max_lifetime_ms=10_000, skew_ms=0, max_message_bytes=8)
        self.assertEqual(code_of(signed("[1]", lifetime_ms=10_001), limits=limits),
                         "lifetime_too_long")
        self.assertEqual(code_of(signed("[1]", lifetime_ms=10_000), now_ms=NOW + 10_001, limits=limits),
                         "expired")
        self.assertEqual(code_of(signed('"123456789"'), limits=limits), "malformed")


class Signing(unittest.TestCase):
    def test_a_value_is_serialised_once_and_signed_as_that_text(self):
        envelope = signed({"deviceId": "lamp-1", "command": "ON", "note": "21 °C"})
        self.assertEqual(envelope["message"], '{"deviceId":"lamp-1","command":"ON","note":"21 °C"}')
        verified = se.verify_envelope(KEY, envelope, hub_path=HUB, target=TARGET, now_ms=NOW)
        self.assertEqual(verified.command["note"], "21 °C")
        self.assertEqual(verified.expiry - verified.issued_at, 30_000)

    def test_fresh_envelopes_use_the_clock_and_random_nonces(self):
        first = se.sign_envelope(KEY, hub_path=HUB, target=TARGET, message=[])
        second = se.sign_envelope(KEY, hub_path=HUB, target=TARGET, message=[])
        self.assertNotEqual(first["nonce"], second["nonce"])
        self.assertEqual(len(se.base64url_decode(first["nonce"])), 24)
        self.assertLess(abs(first["issuedAt"] - se.unix_now_ms()), 60_000)
        self.assertEqual(code_of(first, now_ms=se.unix_now_ms()), "ok")

    def test_what_the_server_would_refuse_is_not_signed(self):
        refused = {
            "newline in target": dict(target="Send\nCommand"),
            "message not JSON": dict(message="lamp on"),
            "NaN value": dict(message=float("nan")),
            "zero lifetime": dict(lifetime_ms=0),
            "timestamp over 2^53 - 1": dict(now_ms=2**53 - 1),
            "short nonce": dict(nonce="AAECAwQFBgcICQoLDA0O"),
            "key of the wrong length": dict(key=b"short"),
            "key text not base64url": dict(key="not a key!"),
        }
        for name, override in refused.items():
            with self.subTest(name):
                options = dict(hub_path=HUB, target=TARGET, message="[]", now_ms=NOW)
                key = override.pop("key", KEY)
                options.update(override)
                with self.assertRaises(ValueError):
                    se.sign_envelope(key, **options)

    def test_base64url_is_strict(self):
        self.assertEqual(se.base64url_decode("AAE"), b"\x00\x01")
        for text in ("AAE=", "AAF", "A", "AA+/", "AA E", "é"):
            with self.subTest(text):
                with self.assertRaises(ValueError):
                    se.base64url_decode(text)


if __name__ == "__main__":
    unittest.main()
