"""aiosignalr (a Python SignalR server) as a peer of Signet in signet-bench.

It speaks the protocol Signet speaks, so the generator drives it with the very same SignalR
scenarios: negotiate, the WebSocket upgrade, the handshake, then

- ``Echo(value)`` answers with its argument, as Signet's ``Echo``;
- ``BroadcastMessage(text)`` sends ``SystemMessage(text)`` to every connection, as Signet's.

Configuration: aiosignalr's defaults (``ServerOptions()``: one invocation at a time per
connection, keep-alive every 15 s, JSON and MessagePack) on aiohttp, one Python process with one
event loop, except the client timeout: 120 s instead of 30 s. aiosignalr accepts ~400
connections a second here, so the first of 10,000 connections waits ~25 s before the generator
starts using it, silent meanwhile, and the scenarios' receivers only read; a real SignalR client
would ping every 15 s. The timeout decides when a silent client is dropped, not what a message
costs. The hub is at ``/hubs/home`` like Signet's. There is no
authentication: aiosignalr has none of its own, and the bearer token the generator sends is
ignored (the generator sends a fixed, meaningless one).

``python server.py [HOST:PORT]`` listens there (default 127.0.0.1:0) and prints
``listening on IP:PORT`` as its first line, which is how ``signet-bench --peer`` learns the port.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from aiohttp import web
from aiosignalr.server import Hub, ServerOptions, SignalRServer

HUB_PATH = "/hubs/home"


class HomeHub(Hub):
    """The two methods the generator's scenarios call, named as on Signet's home hub."""

    async def Echo(self, value: Any) -> Any:  # noqa: N802 (SignalR method names)
        return value

    async def BroadcastMessage(self, text: str) -> None:  # noqa: N802
        await self.clients.all_.send("SystemMessage", text)


async def main(address: str) -> None:
    host, _, port = address.rpartition(":")
    server = SignalRServer(HomeHub, options=ServerOptions(client_timeout_interval=120.0))
    runner = web.AppRunner(server.create_application(path=HUB_PATH), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), backlog=1024)
    await site.start()
    bound = runner.addresses[0]
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0"))
    except KeyboardInterrupt:
        pass
