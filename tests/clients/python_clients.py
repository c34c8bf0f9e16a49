"""The core scenarios with the Python SignalR clients pysignalr and signalr-async over WebSockets,
with JSON and with MessagePack, against a running Signet server. Run by tests/api/client_matrix.rs with the test
virtual environment's Python (./scripts/test.sh installs tests/python/requirements.txt there).

Environment: SIGNET_URL (the server's base URL) and SIGNET_JWT_SECRET (to mint test tokens).
Each scenario prints one line; the exit status is 1 if any failed.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import traceback

BASE_URL = os.environ["SIGNET_URL"].rstrip("/")
SECRET = os.environ["SIGNET_JWT_SECRET"].encode()
HUB_URL = BASE_URL + "/hubs/home"
# How long any expected event may take; generous for a loaded machine.
WAIT = 10.0
UNKNOWN_METHOD = (
    "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(roles=("user",), ttl_secs=600, prefix="py"):
    """An HS256 JWT signed with the server's secret, the way Signet issues them."""
    now = int(time.time())
    claims = {
        "sub": f"{prefix}-{secrets.token_hex(4)}",
        "roles": list(roles),
        "jti": secrets.token_hex(16),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_secs,
        "iss": "signet",
        "aud": "signet",
    }
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}", claims


# ----------------------------------------------------------------------------------------------
# pysignalr


class PySignalR:
    """One pysignalr connection, its run() task and what it received."""

    def __init__(self, token_text: str, protocol: str):
        from pysignalr.client import SignalRClient
        from pysignalr.protocol.json import JSONProtocol
        from pysignalr.protocol.messagepack import MessagepackProtocol

        # pysignalr 1.3.3 applies `access_token_factory` only in its handshake, after negotiate
        # and the WebSocket upgrade, which then fail with 401: the token goes in `headers`
        # instead (docs/clients.md).
        self.client = SignalRClient(
            HUB_URL,
            protocol=MessagepackProtocol() if protocol == "msgpack" else JSONProtocol(),
            headers={"Authorization": f"Bearer {token_text}"},
        )
        self.opened = asyncio.Event()
        self.errors = {}
        self.client.on_open(self._opened)
        self.client.on_error(self._error)
        self.task = None

    async def _opened(self):
        self.opened.set()

    async def _error(self, message):
        self.errors[message.invocation_id] = message.error

    async def start(self):
        self.task = asyncio.create_task(self.client.run())
        await asyncio.wait_for(self.opened.wait(), WAIT)

    async def call(self, method, arguments):
        """Invokes `method`; returns the completion message."""
        done = asyncio.get_running_loop().create_future()

        async def completed(message):
            if not done.done():
                done.set_result(message)

        await self.client.send(method, arguments, on_invocation=completed)
        return await asyncio.wait_for(done, WAIT)

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


async def pysignalr_scenarios(protocol):
    from pysignalr.exceptions import ServerError

    user_token, user_claims = token()
    user = PySignalR(user_token, protocol)
    admin = PySignalR(token(roles=("admin",))[0], protocol)
    try:
        await user.start()
        await admin.start()
        yield "connect with a token"
        who = (await user.call("Whoami", [])).result
        assert who["sub"] == user_claims["sub"], who
        yield "Whoami sees the token's identity"

        echoed = (await user.call("Echo", [{"text": "héllo", "n": 42, "list": [1, None]}])).result
        assert echoed == {"text": "héllo", "n": 42, "list": [1, None]}, echoed
        yield "echo"

        arrived = asyncio.get_running_loop().create_future()

        async def system_message(arguments):
            if not arrived.done():
                arrived.set_result(arguments)

        user.client.on("SystemMessage", system_message)
        text = f"broadcast {secrets.token_hex(4)}"
        await admin.call("BroadcastMessage", [text])
        assert await asyncio.wait_for(arrived, WAIT) == [text]
        yield "an admin's broadcast reaches another client"

        items, ended = [], asyncio.get_running_loop().create_future()

        async def next_item(item):
            items.extend(item if isinstance(item, list) else [item])

        async def complete(message):
            if not ended.done():
                ended.set_result(message)

        await user.client.stream("Counter", [3, 10], on_next=next_item, on_complete=complete)
        await asyncio.wait_for(ended, WAIT)
        assert items == [0, 1, 2], items
        yield "a server stream to its end"

        failed = await user.call("Nope", [])
        assert failed.error == UNKNOWN_METHOD, failed
        yield "an unknown method's error"
    finally:
        await user.stop()
        await admin.stop()

    # Close on expiry: run() ends with the server's Close error.
    expiring = PySignalR(token(ttl_secs=2)[0], protocol)
    try:
        await expiring.start()
        try:
            await asyncio.wait_for(expiring.task, WAIT)
            raise AssertionError("run() returned without an error")
        except ServerError as error:
            assert "Authentication expired" in str(error), error
        yield "closed at token expiry"
    finally:
        await expiring.stop()


# ----------------------------------------------------------------------------------------------
# signalr-async


async def signalr_async_scenarios(protocol):
    from signalr_async.netcore import Client, Hub
    from signalr_async.netcore.protocols import JsonProtocol, MessagePackProtocol

    class Home(Hub):
        def __init__(self):
            super().__init__("home")
            self.messages = asyncio.Queue()
            self.disconnected = asyncio.Event()

        async def on_SystemMessage(self, text):
            await self.messages.put(text)

        async def on_disconnect(self):
            self.disconnected.set()

    def client(hub, token_text, **options):
        # signalr-async 3.0.0 sends `extra_params` on the WebSocket but not on negotiate, so an
        # `access_token` there gets 401: the token goes in a header of both (docs/clients.md).
        headers = {"Authorization": f"Bearer {token_text}"}
        return Client(
            BASE_URL + "/hubs",
            hub,
            connection_options={
                "protocol": MessagePackProtocol() if protocol == "msgpack" else JsonProtocol(),
                "http_client_options": {"headers": headers},
                "ws_client_options": {"headers": headers},
            },
            **options,
        )

    user_token, user_claims = token()
    user_hub, admin_hub = Home(), Home()
    async with client(user_hub, user_token), client(admin_hub, token(roles=("admin",))[0]):
        yield "connect with a token"
        who = await asyncio.wait_for(user_hub.invoke("Whoami"), WAIT)
        assert who["sub"] == user_claims["sub"], who
        yield "Whoami sees the token's identity"

        echoed = await asyncio.wait_for(user_hub.invoke("Echo", {"text": "héllo", "n": 42}), WAIT)
        assert echoed == {"text": "héllo", "n": 42}, echoed
        yield "echo"

        text = f"broadcast {secrets.token_hex(4)}"
        await asyncio.wait_for(admin_hub.invoke("BroadcastMessage", text), WAIT)
        assert await asyncio.wait_for(user_hub.messages.get(), WAIT) == text
        yield "an admin's broadcast reaches another client"

        async def collect():
            return [item async for item in user_hub.stream("Counter", 3, 10)]

        items = await asyncio.wait_for(collect(), WAIT)
        assert items == [0, 1, 2], items
        yield "a server stream to its end"

        try:
            await asyncio.wait_for(user_hub.invoke("Nope"), WAIT)
            raise AssertionError("an unknown method succeeded")
        except asyncio.TimeoutError:
            raise
        except Exception as error:
            assert UNKNOWN_METHOD in str(error), repr(error)
        yield "an unknown method's error"

    expiring_hub = Home()
    async with client(expiring_hub, token(ttl_secs=2)[0], reconnect_policy=False):
        await asyncio.wait_for(expiring_hub.disconnected.wait(), WAIT)
        yield "closed at token expiry"


async def main():
    failed = False
    for name, scenarios in [
        ("pysignalr", pysignalr_scenarios),
        ("signalr-async", signalr_async_scenarios),
    ]:
        for protocol in ["json", "msgpack"]:
            combo = f"{name} WebSockets/{protocol}"
            started = time.monotonic()
            try:
                async for step in scenarios(protocol):
                    print(f"ok {combo}: {step}", flush=True)
            except BaseException:  # noqa: BLE001 - report every failure, then go on
                failed = True
                print(f"FAILED {combo}", flush=True)
                traceback.print_exc()
            print(f"{combo}: {time.monotonic() - started:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
