"""The WebSocket endpoint ``GET /v1/ws``: authentication, the frame loop, dispatch to services.

Sequence: Origin check → upgrade → authentication (``Authorization`` header on the upgrade, or an
``auth`` frame within :data:`AUTH_TIMEOUT`; never a token in the URL) → ``hello`` → frames. Each
request frame is validated against its schema and answered by one ``result`` or ``error`` with its
``id``. Requests of one connection run concurrently (at most :data:`MAX_IN_FLIGHT`), but sends are
handed to the event writer in the order they arrive, so one device's messages keep their order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from redis.exceptions import RedisError

from ..access import Principal
from ..audit.service import Origin
from ..errors import XtError
from ..messaging.receipts import TYPING_INTERVAL
from ..messaging.views import PageView, ReadStateView, ReceiptsView, sync_view
from ..http.context import client_address
from ..presence.views import PresenceView, presence_view
from ..models import utcnow
from ..services import Services
from . import frames
from .connection import (CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_FLOODING, CLOSE_PROTOCOL, CLOSE_RESTART,
                         CLOSE_REVOKED, Connection)
from .hub import Hub

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0
HEARTBEAT = 30.0  # protocol-level ping interval; a peer silent for 1.5x this is closed
MAX_IN_FLIGHT = 32
MAX_WATCHED = 1000  # users whose presence one device may watch


class Gateway:
    def __init__(self, services: Services, hub: Hub, allowed_origins: frozenset[str]):
        self.services = services
        self.hub = hub
        self.allowed_origins = allowed_origins
        self.accepting = True
        self.tasks: set[asyncio.Task[Any]] = set()
        self.handlers: dict[type, Callable[[Connection, Any], Awaitable[Any]]] = {
            frames.Ping: self.on_ping, frames.Sync: self.on_sync, frames.History: self.on_history,
            frames.Send: self.on_send, frames.ForwardRequest: self.on_forward, frames.Edit: self.on_edit,
            frames.Recall: self.on_recall, frames.UpdateCard: self.on_update_card,
            frames.DeleteForMe: self.on_delete_for_me, frames.Read: self.on_read, frames.ReadAll: self.on_read_all,
            frames.Delivered: self.on_delivered, frames.Typing: self.on_typing, frames.Receipts: self.on_receipts,
            frames.Presence: self.on_presence, frames.PresenceWatch: self.on_presence_watch,
            frames.PresenceUnwatch: self.on_presence_unwatch, frames.PresenceQuery: self.on_presence_query,
        }

    # ---- connection life ----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            raise XtError("server.unavailable", "The server is shutting down; connect to another one.")
        if any(name in request.query for name in ("token", "access_token", "auth")):
            raise XtError("request.invalid", "Tokens are never accepted in the URL: use the Authorization header "
                                             "or an auth frame.")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") not in self.allowed_origins:
            raise XtError("request.origin_forbidden")
        principal: Principal | None = None
        header = request.headers.get("Authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise XtError("auth.token_invalid", "Use 'Authorization: Bearer <access token>'.")
            principal = await self.services.auth.authenticate(token.strip())  # refused before the upgrade

        # aiohttp refuses a message of max_msg_size bytes itself; a frame of exactly MAX_FRAME_BYTES is allowed.
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=frames.MAX_FRAME_BYTES + 1, compress=False,
                                   decode_text=False)
        await ws.prepare(request)
        if principal is None:
            principal = await self._authenticate_by_frame(ws)
            if principal is None:
                return ws
        conn = Connection(ws, principal, client_address(request, self.services.settings.trusted_proxies),
                          request.transport)
        conn.start()
        send_rule = self.services.limits.rules["send"]
        # hello is queued first: pushes routed while the hub registers the device come after it.
        conn.enqueue(frames.hello_frame(principal.user_id, conn.device_id, HEARTBEAT, utcnow(), {
            "max_frame_bytes": frames.MAX_FRAME_BYTES, "max_in_flight": MAX_IN_FLIGHT,
            "frames_per_second": Connection.FRAME_RATE, "sends_per_second": send_rule.rate,
            "send_burst": send_rule.burst}))
        await self.hub.register(conn)
        presence = self.services.presence
        try:
            try:
                await presence.device_connected(principal.user_id, conn.presence_key)
            except Exception as exc:  # Redis down: the next renewal registers the device
                log.warning("presence update on connect failed: %s", exc)
            await self._frame_loop(conn)
        finally:
            await self.hub.unregister(conn)
            try:
                await presence.device_disconnected(principal.user_id, conn.presence_key)
            except Exception as exc:  # Redis down: the connection expires by TTL instead
                log.warning("presence update on disconnect failed: %s", exc)
            conn.closed = True
            conn.wake.set()
            if conn.closing is not None:
                await conn.closing  # else aiohttp closes with 1000 before our code and reason are sent
        return ws

    async def _authenticate_by_frame(self, ws: web.WebSocketResponse) -> Principal | None:
        try:
            msg = await ws.receive(timeout=AUTH_TIMEOUT)
        except asyncio.TimeoutError:
            await ws.close(code=CLOSE_AUTH_TIMEOUT, message=b"authenticate within 10 s")
            return None
        if msg.type == WSMsgType.BINARY:
            await ws.close(code=CLOSE_PROTOCOL, message=b"binary frames are not part of the protocol")
            return None
        if msg.type != WSMsgType.TEXT:
            return None
        try:
            frame = frames.decode_request(msg.data)
            if not isinstance(frame, frames.Auth):
                raise frames.FrameError(XtError("auth.required", "The first frame must be auth."),
                                        getattr(frame, "id", None))
            principal = await self.services.auth.authenticate(frame.token)
        except frames.FrameError as exc:
            await ws.send_frame(frames.error_frame(exc.request_id, exc.error), WSMsgType.TEXT)
            await ws.close(code=CLOSE_AUTH_FAILED, message=exc.error.code.encode())
            return None
        except XtError as exc:
            await ws.send_frame(frames.error_frame(frame.id, exc), WSMsgType.TEXT)
            await ws.close(code=CLOSE_AUTH_FAILED, message=exc.code.encode())
            return None
        await ws.send_frame(frames.result_frame(frame.id, {"user_id": principal.user_id}), WSMsgType.TEXT)
        return principal

    async def _frame_loop(self, conn: Connection) -> None:
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        async for msg in conn.ws:
            if msg.type == WSMsgType.TEXT:
                if not conn.allow_frame():
                    if conn.flooding:
                        conn.abort(CLOSE_FLOODING, "flooding: too many frames")
                        break
                    request_id = _peek_id(msg.data)
                    conn.enqueue(frames.error_frame(request_id, XtError(
                        "request.rate_limited", details={"retry_after": 1})))
                    continue
                try:
                    frame = frames.decode_request(msg.data)
                except frames.FrameError as exc:
                    conn.enqueue(frames.error_frame(exc.request_id, exc.error))
                    continue
                if isinstance(frame, frames.Auth):
                    conn.enqueue(frames.error_frame(frame.id, XtError("request.invalid", "Already authenticated.")))
                    continue
                await gate.acquire()
                # The handler starts at once (no await before the service call hands a send to the
                # writer), so sends reach the writer in arrival order.
                task = asyncio.get_running_loop().create_task(self._serve(conn, frame, gate))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif msg.type == WSMsgType.BINARY:
                conn.abort(CLOSE_PROTOCOL, "binary frames are not part of the protocol")
                break
            elif msg.type == WSMsgType.ERROR:
                break

    async def _serve(self, conn: Connection, frame: Any, gate: asyncio.Semaphore) -> None:
        try:
            result = await self.handlers[type(frame)](conn, frame)
            conn.enqueue(frames.result_frame(frame.id, result))
        except XtError as exc:
            conn.enqueue(frames.error_frame(frame.id, exc))
        except (ConnectionFailure, ServerSelectionTimeoutError, RedisError) as exc:  # as REST answers it
            log.warning("database unavailable during %s: %s", type(frame).__name__, exc)
            conn.enqueue(frames.error_frame(frame.id, XtError("server.unavailable")))
        except Exception:
            incident = secrets.token_hex(6)
            log.exception("frame %s failed (incident %s)", type(frame).__name__, incident)
            conn.enqueue(frames.error_frame(frame.id, XtError("server.internal", details={"incident": incident})))
        finally:
            gate.release()

    async def close_signed_out(self) -> None:
        """Close the sockets of devices signed out while the bus was down (their revoke envelope was
        lost with it)."""
        connections = self.hub.all_connections()
        revoked = await self.services.store.devices.revoked_among([c.device_id for c in connections])
        for conn in connections:
            if conn.device_id in revoked:
                conn.abort(CLOSE_REVOKED, "this device was signed out")

    async def shutdown(self) -> None:
        """Stop accepting, tell every device to reconnect elsewhere, let in-flight requests finish."""
        self.accepting = False
        reconnect = frames.reconnect_frame("server_shutdown")
        connections = self.hub.all_connections()
        for conn in connections:
            conn.enqueue(reconnect)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        await asyncio.gather(*(c.flush_and_close(CLOSE_RESTART, "server shutdown: reconnect") for c in connections))

    # ---- frames -------------------------------------------------------------------------------

    async def on_ping(self, conn: Connection, frame: frames.Ping) -> Any:
        return {"server_time": utcnow()}

    async def on_sync(self, conn: Connection, frame: frames.Sync) -> Any:
        result = await self.services.sync.sync(conn.principal, dict(frame.since), frame.limit)
        return sync_view(result, utcnow())

    async def on_history(self, conn: Connection, frame: frames.History) -> Any:
        page = await self.services.messages.history(conn.principal, frame.conversation_id, before=frame.before,
                                                    after=frame.after, limit=frame.limit)
        return PageView(conversation_id=frame.conversation_id, events=page.events, first=page.first,
                        last=page.last, has_more=page.has_more, readable_from=page.readable_from,
                        readable_until=page.readable_until)

    def _check_send_rate(self, conn: Connection) -> None:
        self.services.limits.check("send", conn.user_id)

    async def on_send(self, conn: Connection, frame: frames.Send) -> Any:
        self._check_send_rate(conn)
        written = await self.services.messages.send(conn.principal, frame.conversation_id, frame.client_msg_id,
                                                    frame.message.to_message())
        return {"event": written.event, "duplicate": written.duplicate}

    async def on_forward(self, conn: Connection, frame: frames.ForwardRequest) -> Any:
        self._check_send_rate(conn)
        written = await self.services.messages.forward(conn.principal, frame.conversation_id, frame.client_msg_id,
                                                       frame.source_conversation_id, frame.seqs, frame.mode,
                                                       frame.title)
        return {"event": written.event, "duplicate": written.duplicate}

    async def on_edit(self, conn: Connection, frame: frames.Edit) -> Any:
        written = await self.services.messages.edit(conn.principal, frame.conversation_id, frame.seq, frame.text,
                                                    frame.client_msg_id)
        return {"event": written.event, "duplicate": written.duplicate}

    async def on_recall(self, conn: Connection, frame: frames.Recall) -> Any:
        written = await self.services.messages.recall(conn.principal, frame.conversation_id, frame.seq,
                                                      Origin(ip=conn.remote, user_agent="websocket"))
        return {"event": written.event, "duplicate": written.duplicate}

    async def on_update_card(self, conn: Connection, frame: frames.UpdateCard) -> Any:
        written = await self.services.messages.update_card(conn.principal, frame.conversation_id, frame.seq,
                                                           frame.card, frame.client_msg_id)
        return {"event": written.event, "duplicate": written.duplicate}

    async def on_delete_for_me(self, conn: Connection, frame: frames.DeleteForMe) -> Any:
        await self.services.messages.hide(conn.principal, frame.conversation_id, frame.seqs)
        return {"hidden": sorted(set(frame.seqs))}

    async def on_read(self, conn: Connection, frame: frames.Read) -> Any:
        state = await self.services.read_state.mark_read(conn.principal, frame.conversation_id, frame.seq)
        return ReadStateView(conversation_id=state.conversation_id, read_seq=state.read_seq, unread=state.unread,
                             mention_unread=state.mention_unread)

    async def on_read_all(self, conn: Connection, frame: frames.ReadAll) -> Any:
        return {"conversations": await self.services.read_state.mark_all_read(conn.principal)}

    async def on_delivered(self, conn: Connection, frame: frames.Delivered) -> Any:
        await self.services.read_state.delivered(conn.principal, frame.conversation_id, frame.seq)
        return {}

    async def on_typing(self, conn: Connection, frame: frames.Typing) -> Any:
        now = asyncio.get_running_loop().time()
        last = conn.typing_sent.get(frame.conversation_id, 0.0)
        if now - last < TYPING_INTERVAL:
            return {"sent": False}  # within the interval: quietly not relayed
        conn.typing_sent[frame.conversation_id] = now
        if len(conn.typing_sent) > 100:
            conn.typing_sent = {k: v for k, v in conn.typing_sent.items() if now - v < TYPING_INTERVAL}
        try:
            sent = await self.services.read_state.typing(conn.principal, frame.conversation_id)
        except XtError:
            conn.typing_sent.pop(frame.conversation_id, None)  # a refusal is answered as such every time
            raise
        return {"sent": sent}

    async def on_presence(self, conn: Connection, frame: frames.Presence) -> Any:
        conn.presence_state = frame.state
        await self.services.presence.device_state(conn.user_id, conn.presence_key, frame.state)
        return {"state": frame.state}

    async def on_presence_watch(self, conn: Connection, frame: frames.PresenceWatch) -> Any:
        """Watch users' presence (those the caller may see); answers their current presence."""
        wanted = [u for u in frame.user_ids if u not in conn.watching]
        if len(conn.watching) + len(wanted) > MAX_WATCHED:
            raise XtError("request.invalid", f"A device watches at most {MAX_WATCHED} users; unwatch some first.")
        allowed = await self.services.presence.allowed(conn.principal, wanted)
        await self.hub.watch(conn, allowed)
        return {"presence": await self._presence_views(conn, frame.user_ids)}

    async def on_presence_unwatch(self, conn: Connection, frame: frames.PresenceUnwatch) -> Any:
        await self.hub.unwatch(conn, list(frame.user_ids))
        return {"watching": len(conn.watching)}

    async def on_presence_query(self, conn: Connection, frame: frames.PresenceQuery) -> Any:
        return {"presence": await self._presence_views(conn, frame.user_ids)}

    async def _presence_views(self, conn: Connection, user_ids: list[str]) -> list[PresenceView]:
        return [presence_view(p) for p in await self.services.presence.query(conn.principal, list(user_ids))]

    async def on_receipts(self, conn: Connection, frame: frames.Receipts) -> Any:
        receipts = await self.services.read_state.receipts(conn.principal, frame.conversation_id, frame.seq,
                                                           which=frame.which, after=frame.after, limit=frame.limit)
        return ReceiptsView(conversation_id=frame.conversation_id, seq=frame.seq, read_count=receipts.read_count,
                            total=receipts.total, users=[m.user_id for m in receipts.users],
                            next_after=receipts.next_after)


def _peek_id(raw: bytes) -> str | None:
    try:
        return frames.decode_request(raw).id
    except frames.FrameError as exc:
        return exc.request_id
