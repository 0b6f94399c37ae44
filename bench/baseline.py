"""The ceiling of our stack on this machine: a bare aiohttp WebSocket server that broadcasts.

No authentication, no database, no routing: it accepts sockets and, on ``POST /broadcast?k=KEY``,
sends one pre-encoded frame (of the size of a Xietong event frame) to every socket, the way the
gateway does (encode once, ``send_frame`` per socket). Xietong's fan-out is measured against it in
the same run. ``python -m bench.baseline PORT``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec
from aiohttp import WSMsgType, web

sockets: set[web.WebSocketResponse] = set()
PADDING = "x" * 300  # a Xietong event frame is ~400 bytes


async def connect(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, compress=False)
    await ws.prepare(request)
    sockets.add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        sockets.discard(ws)
    return ws


async def broadcast(request: web.Request) -> web.Response:
    """Send ``n`` frames (keys k-0 … k-n-1) to every socket, each encoded once."""
    for i in range(int(request.query.get("n", "1"))):
        frame = msgspec.json.encode({"type": "event", "k": f"{request.query['k']}-{i}", "t": time.time(),
                                     "pad": PADDING})
        for ws in list(sockets):
            await ws.send_frame(frame, WSMsgType.TEXT)
    return web.Response(text=str(len(sockets)))


async def count(request: web.Request) -> web.Response:
    return web.Response(text=str(len(sockets)))


def main() -> None:
    app = web.Application()
    app.router.add_get("/ws", connect)
    app.router.add_post("/broadcast", broadcast)
    app.router.add_get("/count", count)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: print("READY", flush=True),
                access_log=None)


if __name__ == "__main__":
    main()
