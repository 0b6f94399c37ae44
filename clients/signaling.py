"""Python client of the signaling service (calls and meetings), on ``websockets``.

    async with SignalingClient(url, access_token) as sig:
        call = await sig.request("call.invite", callee=user_id, media="video")
        accepted = await sig.next("call.accepted")
        await sig.request("signal", call_id=call["call_id"], to=accepted["peer"],
                          description={"type": "offer", "sdp": pc.localDescription.sdp})

``request`` returns the ``result`` of a request or raises :class:`SignalingError` with the coded
error. Frames the service sends on its own (``call.incoming``, ``signal``, ``meeting.*`` …) queue up;
``next(type, **match)`` waits for the next one of a type whose fields match.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class SignalingError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class SignalingClient:
    def __init__(self, url: str, token: str, *, timeout: float = 10.0):
        self.url = url
        self.token = token
        self.timeout = timeout
        self.ws: ClientConnection | None = None
        self.hello: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None

    async def __aenter__(self) -> "SignalingClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self) -> dict[str, Any]:
        self.ws = await connect(self.url, max_size=256 * 1024, open_timeout=self.timeout)
        self.closed.clear()
        self._reader = asyncio.ensure_future(self._read())
        self.hello = await self.request("auth", token=self.token)
        return self.hello

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("type") in ("result", "error") and frame.get("id") in self._waiting:
                    future = self._waiting.pop(frame["id"])
                    if not future.done():
                        future.set_result(frame)
                    continue
                async with self._arrived:
                    self._frames.append(frame)
                    self._arrived.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("the signaling connection closed"))
            async with self._arrived:
                self._arrived.notify_all()

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        assert self.ws is not None, "connect first"
        request_id = str(next(self._ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self.ws.send(json.dumps({"type": kind, "id": request_id, **fields}))
        frame = await asyncio.wait_for(future, self.timeout)
        if frame["type"] == "error":
            error = frame["error"]
            raise SignalingError(error["code"], f'{error.get("message", "")} {error.get("details") or ""}'.strip(), error.get("details"))
        return frame.get("result", {})

    async def send_raw(self, data: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def next(self, kind: str, timeout: float | None = None, **match: Any) -> dict[str, Any]:
        """The next frame of this type (and matching fields) that the service sent; removed from the queue."""
        async def find() -> dict[str, Any]:
            async with self._arrived:
                while True:
                    for i, frame in enumerate(self._frames):
                        if frame.get("type") == kind and all(frame.get(k) == v for k, v in match.items()):
                            return self._frames.pop(i)
                    if self.closed.is_set():
                        raise ConnectionError(f"closed before a {kind} frame arrived")
                    await self._arrived.wait()

        return await asyncio.wait_for(find(), timeout or self.timeout)

    def pending(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self._frames if kind is None or f.get("type") == kind]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            try:
                await self._reader
            except Exception:
                pass
