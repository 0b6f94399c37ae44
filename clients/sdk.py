"""The Xietong Python client SDK (async, on ``websockets``; REST calls on ``aiohttp``).

What it does for you (the algorithms of docs/protocol.md):

* **login / refresh** over REST, keeping the token pair;
* **connect** with the access token in the ``Authorization`` header, wait for ``hello``, then
  **sync** every conversation it holds and keep a local log per conversation;
* **send** in call order per conversation (sends to one conversation go one at a time, so messages
  appear in the order ``send`` was called, even when called concurrently or rate-limited), each
  with a ``client_msg_id`` chosen once per message: if the socket drops before the answer,
  the SDK reconnects (with back-off), syncs, and sends the same frame again — the server returns
  the original event, so a message is never stored twice;
* **receive**: pushed events are stored in order; a seq gap triggers a catch-up (``history``)
  so the local log never has holes; ``events()`` yields what arrives;
* **read receipts**: ``read``, ``delivered``, ``receipts``.

    client = XietongClient("http://127.0.0.1:8080")
    await client.login("zhangwei", "Xietong@2026")
    await client.connect()
    event = await client.send_text(conversation_id, "下午三点开会")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import aiohttp
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

log = logging.getLogger(__name__)

RETRYABLE = {"server.unavailable", "request.rate_limited"}


class XietongError(Exception):
    """An error answered by the server, with its stable code (docs/errors.md)."""

    def __init__(self, code: str, message: str = "", details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class ConnectionClosed(Exception):
    """The socket closed before the answer arrived (the SDK retries sends by itself)."""


@dataclass
class ConversationLog:
    """The events of one conversation this client holds, without gaps up to ``through``."""

    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    through: int = 0  # every seq <= through is held (or was not readable)

    def add(self, event: dict[str, Any]) -> None:
        self.events[event["seq"]] = event

    def advance(self) -> None:
        while self.through + 1 in self.events:
            self.through += 1

    def ordered(self) -> list[dict[str, Any]]:
        return [self.events[s] for s in sorted(self.events)]


class XietongClient:
    def __init__(self, base_url: str | list[str], *, device_name: str = "xietong-sdk", platform: str = "cli",
                 reconnect: bool = True, sync_limit: int = 200, hold_all: bool = True):
        """``hold_all``: keep the whole log of every conversation (tests, bots, desktop). A phone
        would pass False and load a conversation's history when it is opened."""
        # Several URLs (server processes, or entry points of a deployment): the client moves to the
        # next one when the current one cannot be reached or asks it to reconnect elsewhere.
        self.urls = [u.rstrip("/") for u in ([base_url] if isinstance(base_url, str) else base_url)]
        self._url_index = 0
        self.device = {"name": device_name, "platform": platform}
        self.reconnect = reconnect
        self.sync_limit = sync_limit
        self.hold_all = hold_all
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.conversations: dict[str, dict[str, Any]] = {}  # id -> ConversationView as last synced
        self.logs: dict[str, ConversationLog] = {}
        self.hello: dict[str, Any] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._requests: dict[str, asyncio.Future[Any]] = {}
        self._pending_sends: dict[str, dict[str, Any]] = {}  # client_msg_id -> frame not yet acknowledged
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._catching_up: set[str] = set()
        self._send_locks: dict[str, asyncio.Lock] = {}
        self.watched: set[str] = set()  # users whose presence this client watches
        self.presence_state = "active"
        self._reconnecting: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return self.urls[self._url_index]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/ws"

    def _next_url(self) -> None:
        self._url_index = (self._url_index + 1) % len(self.urls)

    # ---- REST -----------------------------------------------------------------------------------

    async def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def rest(self, method: str, path: str, json: Any = None, *, auth: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {self.access_token}"} if auth and self.access_token else {}
        session = await self._session()
        async with session.request(method, self.base_url + path, json=json, headers=headers) as response:
            body = await response.json(content_type=None) if response.status != 204 else None
            if response.status >= 400:
                error = (body or {}).get("error", {})
                raise XietongError(error.get("code", f"http.{response.status}"), error.get("message", ""),
                                   error.get("details"))
            return body

    async def login(self, username: str, password: str, totp_code: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username, "password": password, "device": self.device}
        if totp_code:
            body["totp_code"] = totp_code
        tokens = await self.rest("POST", "/v1/auth/login", body, auth=False)
        self._take_tokens(tokens)
        return tokens

    async def refresh(self) -> dict[str, Any]:
        tokens = await self.rest("POST", "/v1/auth/refresh", {"refresh_token": self.refresh_token}, auth=False)
        self._take_tokens(tokens)
        return tokens

    def _take_tokens(self, tokens: dict[str, Any]) -> None:
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]
        self.user_id = tokens["user_id"]
        self.device_id = tokens["device_id"]

    # ---- the socket --------------------------------------------------------------------------------

    async def connect(self, *, sync: bool = True) -> None:
        """Open the WebSocket, wait for ``hello``, and (by default) sync."""
        self._closing = False
        await self._open()
        if sync:
            await self.sync()

    async def _open(self) -> None:
        if self.access_token is None:
            raise XietongError("auth.required", "log in first")
        try:
            ws = await connect(self.ws_url, additional_headers={"Authorization": f"Bearer {self.access_token}"},
                               max_size=8 * 1024 * 1024, open_timeout=10, ping_interval=20, ping_timeout=20)
        except websockets.InvalidStatus as exc:
            body = exc.response.body or b"{}"
            error = msgspec.json.decode(body).get("error", {}) if body.startswith(b"{") else {}
            if exc.response.status_code >= 500:
                self._next_url()  # a process that is stopping (503) or broken: try the next one
            raise XietongError(error.get("code", f"http.{exc.response.status_code}"), error.get("message", "")) from None
        hello = msgspec.json.decode(await asyncio.wait_for(ws.recv(decode=False), 10))
        if hello.get("type") != "hello":
            await ws.close()
            raise XietongError("protocol.unexpected", f"expected hello, got {hello.get('type')}")
        self.hello = hello
        self._ws = ws
        self._connected.set()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(ws))

    async def close(self) -> None:
        self._closing = True
        self._connected.clear()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._http is not None:
            await self._http.close()

    async def drop_connection(self) -> None:
        """Cut the socket abruptly (as a network loss would); the client reconnects by itself."""
        self._connected.clear()
        if self._ws is not None:
            self._ws.transport.abort()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _read_loop(self, ws: ClientConnection) -> None:
        close_reason = None
        try:
            async for raw in ws:
                frame = msgspec.json.decode(raw)
                kind = frame.get("type")
                if kind in ("result", "error"):
                    future = self._requests.pop(frame.get("id") or "", None)
                    if future is not None and not future.done():
                        if kind == "result":
                            future.set_result(frame["result"])
                        else:
                            e = frame["error"]
                            future.set_exception(XietongError(e["code"], e.get("message", ""), e.get("details")))
                elif kind == "event":
                    self._receive_event(frame["event"])
                    await self._inbox.put(frame)
                elif kind == "reconnect":
                    close_reason = frame.get("reason")
                    self._next_url()  # this process is going away: try another first
                elif kind == "resync":
                    # The server's bus lost messages during an outage: catch up on everything.
                    asyncio.get_running_loop().create_task(self._resync())
                elif kind == "hidden":
                    conv_log = self.logs.get(frame["conversation_id"])
                    for seq in frame["seqs"]:
                        if conv_log is not None and seq in conv_log.events:
                            conv_log.events[seq]["hidden"] = True
                    await self._inbox.put(frame)
                else:
                    await self._inbox.put(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._connected.clear()
            for future in self._requests.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(close_reason or "socket closed"))
            self._requests.clear()
            if not self._closing and self.reconnect:
                self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self._open()
            except XietongError as exc:
                if exc.code == "auth.token_expired" and self.refresh_token:
                    await self.refresh()
                    continue
                if exc.code.startswith("auth."):
                    log.warning("giving up reconnecting: %s", exc)
                    return
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                self._next_url()
            else:
                # Restore what belongs to the socket (the presence state and the watches), then
                # catch up; unacknowledged sends go again from _send_reliably (same client_msg_id).
                with contextlib.suppress(ConnectionClosed, XietongError, asyncio.TimeoutError):
                    if self.presence_state != "active":
                        await self.request("presence", state=self.presence_state)
                    if self.watched:
                        for state in await self.watch_presence(sorted(self.watched)):
                            await self._inbox.put({"type": "presence", **state})
                    await self.sync()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _write(self, frame: dict[str, Any]) -> asyncio.Future[Any]:
        if self._ws is None or not self._connected.is_set():
            raise ConnectionClosed("not connected")
        frame["id"] = str(next(self._ids))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[frame["id"]] = future
        try:
            await self._ws.send(msgspec.json.encode(frame).decode())
        except websockets.ConnectionClosed:
            self._requests.pop(frame["id"], None)
            raise ConnectionClosed("socket closed") from None
        return future

    async def request(self, kind: str, timeout: float = 30, **fields: Any) -> Any:
        """Send one request frame and wait for its result (raises XietongError for an error)."""
        future = await self._write({"type": kind, **fields})
        return await asyncio.wait_for(future, timeout)

    # ---- messaging -------------------------------------------------------------------------------

    async def send(self, conversation_id: str, message: dict[str, Any], *, client_msg_id: str | None = None,
                   timeout: float = 60) -> dict[str, Any]:
        """Send a message; retried across reconnects until the server acknowledges it. Returns the
        stored event (the original one if this client_msg_id was stored before)."""
        client_msg_id = client_msg_id or uuid.uuid4().hex
        frame = {"type": "send", "conversation_id": conversation_id, "client_msg_id": client_msg_id,
                 "message": message}
        async with self._send_locks.setdefault(conversation_id, asyncio.Lock()):  # FIFO: call order kept
            return await self._send_reliably(client_msg_id, frame, timeout)

    async def send_text(self, conversation_id: str, text: str, **extra: Any) -> dict[str, Any]:
        client_msg_id = extra.pop("client_msg_id", None)
        return await self.send(conversation_id, {"kind": "text", "text": text, **extra}, client_msg_id=client_msg_id)

    async def forward(self, conversation_id: str, source_conversation_id: str, seqs: list[int], *,
                      mode: str = "merged", title: str = "") -> dict[str, Any]:
        client_msg_id = uuid.uuid4().hex
        frame = {"type": "forward", "conversation_id": conversation_id, "client_msg_id": client_msg_id,
                 "source_conversation_id": source_conversation_id, "seqs": seqs, "mode": mode, "title": title}
        async with self._send_locks.setdefault(conversation_id, asyncio.Lock()):
            return await self._send_reliably(client_msg_id, frame, 60)

    async def _send_reliably(self, client_msg_id: str, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Write the frame until it is answered: after a lost socket, wait for the reconnect and write
        the same frame again (same client_msg_id: the server dedupes)."""
        loop = asyncio.get_running_loop()
        self._pending_sends[client_msg_id] = frame
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    if not self._connected.is_set():
                        await asyncio.wait_for(self._connected.wait(), max(0.0, deadline - loop.time()))
                    answer = await asyncio.wait_for(await self._write(dict(frame)), max(0.0, deadline - loop.time()))
                except ConnectionClosed:
                    await asyncio.sleep(0.01)  # let the reader notice the loss and reconnect
                    continue
                except XietongError as exc:
                    if exc.code in RETRYABLE and loop.time() < deadline:
                        await asyncio.sleep(float(exc.details.get("retry_after", 0.2)))
                        continue
                    raise
                event = answer["event"]
                self._receive_event(event)
                return event
        finally:
            self._pending_sends.pop(client_msg_id, None)

    def _receive_event(self, event: dict[str, Any]) -> None:
        """Store an event; a gap before it starts a catch-up for its conversation."""
        cid = event["conversation_id"]
        conv_log = self.logs.setdefault(cid, ConversationLog())
        conv_log.add(event)
        if event["type"] == "message.recalled" and event.get("target_seq") in conv_log.events:
            target = conv_log.events[event["target_seq"]]
            target.pop("message", None)
            target["recalled"] = True
        if event["type"] in ("message.edited", "card.updated") and event.get("target_seq") in conv_log.events:
            target = conv_log.events[event["target_seq"]]
            if target.get("message") is not None and event.get("message") is not None:
                target["message"] = event["message"]
                target["edited_at"] = event["created_at"]  # as history shows it (to within the write)
        before = conv_log.through
        conv_log.advance()
        if event["seq"] > conv_log.through + 1 and before == conv_log.through and cid not in self._catching_up \
                and self._connected.is_set():
            self._catching_up.add(cid)
            asyncio.get_running_loop().create_task(self._catch_up(cid))

    async def _resync(self) -> None:
        """The server lost notices during an outage: catch up on messages, and re-read the presence
        of the users watched (their changes in the meantime were not announced)."""
        with contextlib.suppress(XietongError, ConnectionClosed, asyncio.TimeoutError):
            await self.sync()
            if self.watched:
                for state in await self.query_presence(sorted(self.watched)):
                    await self._inbox.put({"type": "presence", **state})
        await self._inbox.put({"type": "resync"})

    async def _catch_up(self, conversation_id: str) -> None:
        try:
            await self.fetch_after(conversation_id)
        except (XietongError, ConnectionClosed):
            pass
        finally:
            self._catching_up.discard(conversation_id)

    async def fetch_after(self, conversation_id: str) -> None:
        """Page forward with ``history after=`` until the local log has no gap."""
        conv_log = self.logs.setdefault(conversation_id, ConversationLog())
        while True:
            page = await self.request("history", conversation_id=conversation_id, after=conv_log.through,
                                      limit=200)
            for event in page["events"]:
                self._receive_event(event)
            conv_log.through = max(conv_log.through, page["last"])
            conv_log.advance()
            if not page["has_more"]:
                return

    async def sync(self) -> dict[str, Any]:
        """Catch up on every conversation held, page by page, and refresh the conversation list."""
        result: dict[str, Any] = {}
        while True:
            since = {cid: log_.through for cid, log_ in self.logs.items()}
            result = await self.request("sync", since=since, limit=self.sync_limit)
            self.conversations = {c["id"]: c for c in result["conversations"]}
            new = [cid for cid in self.conversations if cid not in self.logs] if self.hold_all else []
            for cid in new:
                self.logs[cid] = ConversationLog()
            for cid, events in result["events"].items():
                for event in events:
                    self._receive_event(event)
            for cid, through in result["through"].items():
                conv_log = self.logs.setdefault(cid, ConversationLog())
                conv_log.through = max(conv_log.through, through)
                conv_log.advance()
            for cid, error in result["errors"].items():
                if error["code"] == "message.seq_out_of_range":
                    self.logs[cid] = ConversationLog()  # our copy is wrong: start over
                elif error["code"] == "not_found":
                    self.logs.pop(cid, None)
            if not any(result["has_more"].values()) and not result["errors"] and not new:
                return result

    async def open_conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        """Load a conversation this device does not hold yet (all its readable events)."""
        self.logs.setdefault(conversation_id, ConversationLog())
        await self.fetch_after(conversation_id)
        return self.logs[conversation_id].ordered()

    async def history(self, conversation_id: str, *, before: int | None = None, after: int | None = None,
                      limit: int = 50) -> dict[str, Any]:
        fields: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
        if before is not None:
            fields["before"] = before
        if after is not None:
            fields["after"] = after
        return await self.request("history", **fields)

    async def read(self, conversation_id: str, seq: int) -> dict[str, Any]:
        return await self.request("read", conversation_id=conversation_id, seq=seq)

    async def read_all(self) -> dict[str, Any]:
        return await self.request("read_all")

    async def delivered(self, conversation_id: str, seq: int) -> dict[str, Any]:
        return await self.request("delivered", conversation_id=conversation_id, seq=seq)

    async def receipts(self, conversation_id: str, seq: int, *, which: str = "read") -> dict[str, Any]:
        return await self.request("receipts", conversation_id=conversation_id, seq=seq, which=which)

    async def recall(self, conversation_id: str, seq: int) -> dict[str, Any]:
        return (await self.request("recall", conversation_id=conversation_id, seq=seq))["event"]

    async def edit(self, conversation_id: str, seq: int, text: str) -> dict[str, Any]:
        return (await self.request("edit", conversation_id=conversation_id, seq=seq, text=text))["event"]

    async def typing(self, conversation_id: str) -> dict[str, Any]:
        return await self.request("typing", conversation_id=conversation_id)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Pushed frames as they arrive: ``event``, ``read``, ``delivered``, ``typing``."""
        while True:
            yield await self._inbox.get()

    async def next_push(self, kind: str | None = None, timeout: float = 10) -> dict[str, Any]:
        """The next pushed frame (of ``kind``, skipping others)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await asyncio.wait_for(self._inbox.get(), max(0.0, deadline - loop.time()))
            if kind is None or frame.get("type") == kind:
                return frame

    async def next_message(self, conversation_id: str | None = None, timeout: float = 10) -> dict[str, Any]:
        """The next pushed ``message`` event (of ``conversation_id``), skipping other pushes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.next_push("event", timeout=max(0.0, deadline - loop.time()))
            event = frame["event"]
            if event["type"] == "message" and conversation_id in (None, event["conversation_id"]):
                return event

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """The message events held for a conversation, in seq order."""
        return [e for e in self.logs.get(conversation_id, ConversationLog()).ordered() if e["type"] == "message"]

    # Presence.
    async def set_presence(self, state: str) -> dict[str, Any]:
        """Tell the server this device is "active" (foreground) or "away" (background); kept across
        reconnects."""
        self.presence_state = state
        return await self.request("presence", state=state)

    async def watch_presence(self, user_ids: list[str]) -> list[dict[str, Any]]:
        """Receive ``presence`` pushes for these users; answers their current presence."""
        states = (await self.request("presence_watch", user_ids=user_ids))["presence"]
        self.watched.update(s["user_id"] for s in states)
        return states

    async def query_presence(self, user_ids: list[str]) -> list[dict[str, Any]]:
        return (await self.request("presence_query", user_ids=user_ids))["presence"]

    # Conversation management goes over REST.
    async def open_direct(self, user_id: str) -> dict[str, Any]:
        return await self.rest("POST", "/v1/conversations/direct", {"user_id": user_id})

    async def create_group(self, name: str, member_ids: list[str]) -> dict[str, Any]:
        return await self.rest("POST", "/v1/conversations/groups", {"name": name, "member_ids": member_ids})
