"""Helpers for messaging tests: SDK clients for demo users, raw sockets, waiting without sleeping."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Awaitable, Callable

import aiohttp

from xietong.clients import XietongClient
from xietong.server.access import Principal
from xietong.server.seed import DEMO_PASSWORD

_ids = itertools.count(1)


async def client_for(demo: Any, username: str, *, connect: bool = True, **options: Any) -> XietongClient:
    client = XietongClient(demo.server.url, device_name=f"test-{username}", **options)
    await client.login(username, DEMO_PASSWORD)
    if connect:
        await client.connect()
    return client


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns a truthy value (or an awaitable resolving to one)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def principal(demo: Any, username: str) -> Principal:
    return Principal(demo.user(username), None)


async def group_of(demo: Any, owner: str, members: list[str], name: str = "测试群") -> str:
    conversation = await demo.server.services.conversations.create_group(
        principal(demo, owner), name, [demo.user(m) for m in members], None)
    return conversation.id


async def direct_between(demo: Any, a: str, b: str) -> str:
    conversation = await demo.server.services.conversations.open_direct(principal(demo, a), demo.user(b))
    return conversation.id


class RawSocket:
    """A bare WebSocket speaking raw frames (for protocol and bad-input tests)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession):
        self.ws = ws
        self.session = session
        self.pushes: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, demo: Any, username: str | None, *, headers: dict[str, str] | None = None,
                   hello: bool = True, path: str = "/v1/ws") -> "RawSocket":
        session = aiohttp.ClientSession()
        hdrs = dict(headers or {})
        if username is not None:
            hdrs["Authorization"] = f"Bearer {await demo.token(username)}"
        ws = await session.ws_connect(demo.server.url.replace("http", "ws", 1) + path, headers=hdrs)
        sock = cls(ws, session)
        if hello and username is not None:
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "hello", frame
        return sock

    async def request(self, frame: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        frame = {"id": f"r{next(_ids)}", **frame}
        await self.ws.send_json(frame)
        return await self.answer(frame["id"], timeout)

    async def answer(self, request_id: str | None, timeout: float = 10) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.ws.receive_json(timeout=max(0.01, deadline - loop.time()))
            if frame.get("type") in ("result", "error") and frame.get("id") == request_id:
                return frame
            self.pushes.append(frame)

    async def push(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        for i, frame in enumerate(self.pushes):
            if frame.get("type") == kind:
                return self.pushes.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.ws.receive_json(timeout=max(0.01, deadline - loop.time()))
            if frame.get("type") == kind:
                return frame
            self.pushes.append(frame)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> tuple[int | None, str]:
    """Read until the server closes ``ws``: its close code and reason (frames before it are dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - loop.time()))
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code, ""


async def events_stored(demo: Any, conversation_id: str) -> int:
    """How many events the conversation's log holds (to show that refused input stored nothing)."""
    return await demo.server.services.store.events.col.count_documents({"conversation_id": conversation_id})
