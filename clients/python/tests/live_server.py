"""The Python signer and verifier against a live Signet server, with the signalrcore client over
WebSockets (tests/api/python_client.rs starts the server and runs this).

A user logs in and, with the message key from the login answer:
- invokes EchoSigned with a signed envelope: accepted, the command comes back;
- sends it again: refused as replayed_nonce; a tampered copy: bad_signature; one signed for
  another method: bad_signature; an expired one: expired;
then provisions a device, which connects with its own token and key, verifies the server-signed
Command it receives with verify_envelope (and refuses the same envelope a second time), and answers
with a signed CommandResult that reaches the user.

Environment: SIGNET_URL (the server's base URL), SIGNET_TEST_USER, SIGNET_TEST_PASSWORD.
Exits 0 when every step passed; prints each step.
"""

import json
import os
import queue
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

try:
    import signet_envelope as se
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import signet_envelope as se

try:
    from signalrcore.hub_connection_builder import HubConnectionBuilder
    from signalrcore.types import HttpTransportType
except ImportError:
    sys.exit("signalrcore is not installed: pip install -r tests/python/requirements.txt "
             "(./scripts/test.sh installs it into target/python-venv)")

HUB_PATH = "/hubs/home"
# Generous: the machine running the suite may be busy.
DEADLINE_SECS = 30
STARTED = time.monotonic()


def step(text):
    print(f"python client: {time.monotonic() - STARTED:5.1f} s: {text}", flush=True)


def check(condition, failure):
    # Not `assert`, which python -O would drop.
    if not condition:
        raise AssertionError(failure)


def post(base_url, path, body, token=None):
    request = urllib.request.Request(
        base_url.rstrip("/") + path,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=DEADLINE_SECS) as response:
        return json.loads(response.read())


class HubRefused(Exception):
    """The server answered an invocation with an error."""


class Hub:
    """A signalrcore connection to the home hub over WebSockets, with blocking invoke."""

    def __init__(self, base_url, access_token):
        self.connection = HubConnectionBuilder().with_url(
            base_url.rstrip("/") + HUB_PATH,
            options={"access_token_factory": lambda: access_token,
                     "transport": HttpTransportType.web_sockets},
        ).build()
        self._pending = {}
        self._lock = threading.Lock()
        self.connection.on_error(self._on_error)
        opened = threading.Event()
        self.connection.on_open(opened.set)
        self.connection.start()
        if not opened.wait(DEADLINE_SECS):
            raise AssertionError("the hub connection did not open")

    def on(self, target, handler):
        self.connection.on(target, handler)

    def invoke(self, method, *arguments):
        answer = queue.Queue(1)
        invocation_id = str(uuid.uuid4())
        with self._lock:
            self._pending[invocation_id] = answer
        self.connection.invoke(
            method, list(arguments),
            on_invocation=lambda completion: answer.put((True, completion.result)),
            invocation_id=invocation_id,
        )
        try:
            ok, value = answer.get(timeout=DEADLINE_SECS)
        except queue.Empty:
            raise AssertionError(f"no answer to {method} within {DEADLINE_SECS} s") from None
        finally:
            with self._lock:
                self._pending.pop(invocation_id, None)
        if not ok:
            raise HubRefused(value)
        return value

    def _on_error(self, completion):
        # signalrcore routes failed completions here instead of to the invocation's callback.
        with self._lock:
            answer = self._pending.get(getattr(completion, "invocation_id", None))
        if answer is not None:
            answer.put((False, completion.error))

    def stop(self):
        self.connection.stop()


def expect_refused(hub, method, envelope, code):
    try:
        hub.invoke(method, envelope)
    except HubRefused as refused:
        expected = f"envelope rejected ({code})"
        if expected not in str(refused):
            raise AssertionError(f"{method}: expected {expected!r}, got {refused}") from None
        return
    raise AssertionError(f"{method} accepted an envelope that should be {code}")


def main():
    base_url = os.environ["SIGNET_URL"]
    login = post(base_url, "/api/auth/login", {"username": os.environ["SIGNET_TEST_USER"],
                                               "password": os.environ["SIGNET_TEST_PASSWORD"]})
    user_key = login["messageKey"]
    step("logged in, message key received")

    user = Hub(base_url, login["accessToken"])
    step("connected over WebSockets with signalrcore")

    command = {"hello": "from python", "temperature": "21.5 °C"}
    envelope = se.sign_envelope(user_key, hub_path=HUB_PATH, target="EchoSigned", message=command)
    echoed = user.invoke("EchoSigned", envelope)
    check(echoed == command, f"EchoSigned returned {echoed!r}")
    step("a signed EchoSigned was accepted and returned its command")

    expect_refused(user, "EchoSigned", envelope, "replayed_nonce")
    step("the same envelope sent again was refused: replayed_nonce")

    tampered = se.sign_envelope(user_key, hub_path=HUB_PATH, target="EchoSigned", message=command)
    tampered["message"] = json.dumps({"hello": "tampered"})
    expect_refused(user, "EchoSigned", tampered, "bad_signature")
    other_target = se.sign_envelope(user_key, hub_path=HUB_PATH, target="Echo", message=command)
    expect_refused(user, "EchoSigned", other_target, "bad_signature")
    step("a tampered envelope and one signed for another method were refused: bad_signature")

    stale = se.sign_envelope(user_key, hub_path=HUB_PATH, target="EchoSigned", message=command,
                             now_ms=se.unix_now_ms() - 120_000)
    expect_refused(user, "EchoSigned", stale, "expired")
    step("an envelope issued two minutes ago was refused: expired")

    # The other direction: a Python device verifies what the server signs for it.
    device = post(base_url, "/api/devices", {"name": "python-device"}, login["accessToken"])
    device_login = post(base_url, "/api/auth/device-token",
                        {"deviceId": device["deviceId"], "deviceKey": device["deviceKey"]})
    device_key = device_login["messageKey"]
    device_hub = Hub(base_url, device_login["accessToken"])
    nonces = se.NonceCache()
    checked = queue.Queue()

    def on_command(arguments):
        try:
            verified = se.verify_envelope(device_key, arguments[0], hub_path=HUB_PATH,
                                          target="Command", nonces=nonces)
            try:
                se.verify_envelope(device_key, arguments[0], hub_path=HUB_PATH,
                                   target="Command", nonces=nonces)
                replay = "ok"
            except se.EnvelopeRejected as rejected:
                replay = rejected.code
            result = se.sign_envelope(
                device_key, hub_path=HUB_PATH, target="CommandResult",
                message={"commandId": verified.command["commandId"], "status": "ok",
                         "result": {"locked": False}},
            )
            device_hub.invoke("CommandResult", result)
            checked.put((verified.command, replay))
        except Exception as error:  # reported to the main thread, which fails the run
            checked.put((error, None))

    def on_command_thread(arguments):
        # signalrcore calls handlers on its receiving thread, so a blocking invoke from here
        # would wait for a completion that thread can no longer read.
        threading.Thread(target=on_command, args=(arguments,), daemon=True).start()

    device_hub.on("Command", on_command_thread)
    results = queue.Queue()
    user.on("CommandResult", lambda arguments: results.put(arguments[0]))
    step("device provisioned and connected with its own token and message key")

    send = {"deviceId": device["deviceId"], "command": "UNLOCK"}
    deadline = time.monotonic() + DEADLINE_SECS
    while True:
        try:
            sent = user.invoke("SendCommand", se.sign_envelope(
                user_key, hub_path=HUB_PATH, target="SendCommand", message=send))
            break
        except HubRefused as refused:
            # The device's connection may not be registered yet right after it opened.
            if "device offline" not in str(refused) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    received, replay = checked.get(timeout=DEADLINE_SECS)
    if isinstance(received, Exception):
        raise received
    check(received["commandId"] == sent["commandId"], f"the device received {received!r}")
    check(received["command"] == "UNLOCK" and received["from"], f"the device received {received!r}")
    check(replay == "replayed_nonce", f"the device's second check said {replay}")
    step("the device verified the server-signed Command and refused it a second time")

    result = results.get(timeout=DEADLINE_SECS)
    check(result == {"commandId": sent["commandId"], "deviceId": device["deviceId"],
                     "status": "ok", "result": {"locked": False}}, f"the user received {result!r}")
    step("the device's signed CommandResult reached the user")

    device_hub.stop()
    user.stop()
    step("all steps passed")


if __name__ == "__main__":
    main()
