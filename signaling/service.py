"""The signaling service: one WebSocket per device (``websockets``), calls and meetings, SDP/ICE relay.

A connection authenticates with an access token (first frame ``auth``, or an ``Authorization:
Bearer`` header; never the URL), verified offline against the published public keys. Every frame
is validated (:mod:`.protocol`); refusals are coded errors and never end anyone's call or meeting.

State lives in :mod:`.state` (memory, or Redis shared by every signaling process); frames for a
device travel on its ``device:<id>`` channel, ringing on ``user:<id>``. Calls are in
:mod:`.calls`, meetings in :mod:`.meetings`; this module owns connections and routing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Awaitable, Callable

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from xietong.server.auth.tokens import Claims, TokenVerifier
from xietong.server.config import Settings
from xietong.server.errors import XtError
from xietong.server.runtime import LISTEN_BACKLOG

from . import protocol as p
from .state import MemoryState, State

log = logging.getLogger("xietong.signaling")

AUTH_TIMEOUT_SECONDS = 10.0
EXPIRED_GRACE_SECONDS = 60.0  # a connection whose token expired and was not renewed is closed after this
SEND_QUEUE_FRAMES = 512  # a device that cannot keep up is disconnected (it rejoins and renegotiates)
CLOSE_AUTH = 4401
CLOSE_REPLACED = 4409
CLOSE_SLOW = 4429


@dataclass(eq=False)
class Connection:
    ws: ServerConnection
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    user_id: str = ""
    device_id: str = ""
    claims: Claims | None = None
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_FRAMES))
    meetings: set[str] = field(default_factory=set)
    closed: bool = False
    expiry: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("signaling: device %s cannot keep up; disconnecting it", self.device_id)
            self.closed = True
            asyncio.ensure_future(self.ws.close(CLOSE_SLOW, "too slow"))

    async def writer(self) -> None:
        while True:
            await self.ws.send((await self.queue.get()).decode())

    def watch_expiry(self) -> None:
        """Close the socket once its token has been expired for EXPIRED_GRACE_SECONDS without an ``auth``
        frame renewing it (a silent socket too: it still receives a meeting's frames)."""
        if self.expiry is not None:
            self.expiry.cancel()

        async def close_when_expired() -> None:
            assert self.claims is not None
            await asyncio.sleep(max(0.0, self.claims.expires_at + EXPIRED_GRACE_SECONDS - time.time()))
            await self.ws.close(CLOSE_AUTH, "auth.token_expired")

        self.expiry = asyncio.ensure_future(close_when_expired())


class SignalingService:
    """Built by :func:`start_signaling`; tests reach its parts (``calls``, ``meetings``, ``state``)."""

    def __init__(self, settings: Settings, verifier: TokenVerifier, chat: Any, state: State | None = None, *,
                 janus: Any = None, recordings_dir: Path | None = None):
        from .calls import Calls
        from .meetings import Meetings

        self.settings = settings
        self.verifier = verifier
        self.chat = chat  # the messaging server's Services: conversations, messages, push, store
        self.state: State = state or MemoryState()
        self.local: dict[str, Connection] = {}  # device id → its connection on this process
        self.by_user: dict[str, set[Connection]] = {}
        self.calls = Calls(self)
        self.meetings = Meetings(self, janus=janus, recordings_dir=recordings_dir or settings.data_dir / "recordings")
        self.server: Server | None = None
        self.url = ""
        c, m = self.calls, self.meetings
        self._handlers: dict[type, Callable[[Connection, Any], Awaitable[Any]]] = {
            p.Ping: lambda conn, f: _pong(), p.TurnCredentials: lambda conn, f: self._turn(conn),
            p.CallInvite: c.invite, p.CallAccept: c.accept, p.CallDecline: c.decline, p.CallCancel: c.cancel,
            p.CallHangup: c.hangup, p.Signal: self._signal,
            p.MeetingCreate: m.create, p.MeetingGet: m.get, p.MeetingJoin: m.join, p.MeetingLeave: m.leave,
            p.MeetingUpdateState: m.update_state, p.MeetingAdmit: m.admit, p.MeetingMute: m.mute,
            p.MeetingRemove: m.remove, p.MeetingTransferHost: m.transfer_host, p.MeetingSetRole: m.set_role,
            p.MeetingMuteAll: m.mute_all, p.MeetingLock: m.lock, p.MeetingEnd: m.end, p.MeetingRecord: m.record,
            p.SfuPublish: m.sfu_publish, p.SfuSubscribe: m.sfu_subscribe, p.SfuAnswer: m.sfu_answer,
            p.SfuTrickle: m.sfu_trickle,
        }
        self.local_channels: dict[str, Callable[[bytes], Awaitable[None]]] = {}  # server-side peers (recorder)

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        await self.state.start(self._on_channel)
        self.server = await serve(self._serve, host, port, max_size=p.MAX_FRAME_BYTES, ping_interval=20,
                                  ping_timeout=20, process_request=self._http, compression=None,
                                  backlog=LISTEN_BACKLOG)  # a reconnect storm must not overflow the accept queue
        bound = next(iter(self.server.sockets)).getsockname()[1]
        self.url = self.settings.effective_signaling_url(bound)
        self.port = bound
        await self.meetings.start()

    async def stop(self) -> None:
        """Tell connected devices to reconnect elsewhere, then close."""
        await self.meetings.stop()
        for conn in list(self.local.values()):
            conn.send(p.encode({"type": "reconnect", "reason": "the signaling process is stopping"}))
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()
        await self.calls.stop()
        await self.state.close()

    # ---- HTTP: health and recordings ---------------------------------------------------------------

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/v1/signal":
            return None
        if path == "/healthz":
            return _json_response(HTTPStatus.OK, {"ok": True, "connections": len(self.local)})
        if path.startswith("/v1/recordings/"):
            return await self.meetings.download(request.headers, path)
        return _json_response(HTTPStatus.NOT_FOUND, XtError("request.not_found").to_body())

    def authenticate_header(self, headers: Headers) -> Claims:
        value = headers.get("Authorization", "")
        if not value.startswith("Bearer "):
            raise XtError("auth.required")
        return self.verifier.verify(value[7:].strip())

    # ---- connections -------------------------------------------------------------------------------

    async def _serve(self, ws: ServerConnection) -> None:
        conn = Connection(ws)
        writer = asyncio.ensure_future(conn.writer())
        try:
            header = ws.request.headers.get("Authorization") if ws.request else None
            if header:
                try:
                    await self._authenticate(conn, self.authenticate_header(ws.request.headers), None)
                except XtError as exc:
                    await ws.send(p.error_frame(None, exc).decode())
                    await ws.close(CLOSE_AUTH, exc.code)
                    return
            else:
                if not await self._first_frame(conn):
                    return
            async for raw in ws:
                await self._frame(conn, raw)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            writer.cancel()
            if conn.expiry is not None:
                conn.expiry.cancel()
            await self._disconnected(conn)

    async def _first_frame(self, conn: Connection) -> bool:
        try:
            raw = await asyncio.wait_for(conn.ws.recv(), AUTH_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            await conn.ws.close(CLOSE_AUTH, "auth.required")
            return False
        try:
            frame = p.decode(raw)
            if not isinstance(frame, p.Auth):
                raise p.FrameError(XtError("auth.required", "The first frame is auth."), getattr(frame, "id", None))
            await self._authenticate(conn, self.verifier.verify(frame.token), frame.id)
            return True
        except p.FrameError as exc:
            await conn.ws.send(p.error_frame(exc.request_id, exc.error).decode())
        except XtError as exc:
            await conn.ws.send(p.error_frame(getattr(frame, "id", None), exc).decode())
        await conn.ws.close(CLOSE_AUTH, "auth failed")
        return False

    async def _authenticate(self, conn: Connection, claims: Claims, request_id: str | None) -> None:
        await self.chat.auth.session(claims)  # the device is still signed in
        assert claims.device_id is not None
        conn.user_id, conn.device_id, conn.claims = claims.user_id, claims.device_id, claims
        conn.watch_expiry()
        old = self.local.get(conn.device_id)
        if old is not None and old is not conn:  # one connection per device: the newer one wins
            old.closed = True
            self._forget(old)
            asyncio.ensure_future(old.ws.close(CLOSE_REPLACED, "replaced by a newer connection"))
        self.local[conn.device_id] = conn
        self.by_user.setdefault(conn.user_id, set()).add(conn)
        await self.state.subscribe([f"device:{conn.device_id}", f"user:{conn.user_id}"])
        result = {"user_id": conn.user_id, "device_id": conn.device_id, "expires_at": claims.expires_at,
                  "ice_servers": self.ice_servers(conn.user_id)}
        conn.send(p.result_frame(request_id, result) if request_id else p.encode({"type": "hello", **result}))
        await self.calls.reconnected(conn)

    def _forget(self, conn: Connection) -> bool:
        """Drop a connection from the routing tables; False if a newer connection holds its device."""
        users = self.by_user.get(conn.user_id)
        if users is not None:
            users.discard(conn)
            if not users:
                self.by_user.pop(conn.user_id, None)
        if self.local.get(conn.device_id) is conn:
            del self.local[conn.device_id]
            return True
        return False

    async def _disconnected(self, conn: Connection) -> None:
        if not conn.device_id:
            return
        if self._forget(conn):
            await self.state.unsubscribe([f"device:{conn.device_id}", f"user:{conn.user_id}"])
            await self.meetings.disconnected(conn)
            await self.calls.disconnected(conn)
        else:
            await self.state.unsubscribe([f"user:{conn.user_id}"])

    # ---- frames ------------------------------------------------------------------------------------

    async def _frame(self, conn: Connection, raw: str | bytes) -> None:
        request_id = None
        try:
            frame = p.decode(raw)
            request_id = frame.id
            if isinstance(frame, p.Auth):
                claims = self.verifier.verify(frame.token)
                if (claims.user_id, claims.device_id) != (conn.user_id, conn.device_id):
                    raise XtError("perm.forbidden", "A connection keeps its user and device.")
                await self.chat.auth.session(claims)  # not signed out meanwhile
                conn.claims = claims
                conn.watch_expiry()
                conn.send(p.result_frame(frame.id, {"expires_at": claims.expires_at}))
                return
            assert conn.claims is not None
            if conn.claims.expires_at < time.time():  # (closed EXPIRED_GRACE_SECONDS later: watch_expiry)
                raise XtError("auth.token_expired", "Send an auth frame with a fresh token.")
            result = await self._handlers[type(frame)](conn, frame)
            conn.send(p.result_frame(frame.id, result if result is not None else {}))
        except p.FrameError as exc:
            conn.send(p.error_frame(exc.request_id, exc.error))
        except XtError as exc:
            conn.send(p.error_frame(request_id, exc))
        except Exception:
            incident = secrets.token_hex(6)
            log.exception("signaling: frame failed (incident %s)", incident)
            conn.send(p.error_frame(request_id, XtError("server.internal", details={"incident": incident})))

    async def _turn(self, conn: Connection) -> dict[str, Any]:
        return {"ice_servers": self.ice_servers(conn.user_id)}

    def ice_servers(self, user_id: str) -> list[dict[str, Any]]:
        if not self.settings.turn_urls or not self.settings.turn_secret:
            return []
        from .turn import ice_servers

        return ice_servers(self.settings, user_id)

    async def _signal(self, conn: Connection, frame: p.Signal) -> dict[str, Any]:
        """Relay a description / candidate to one peer of the same call or meeting (checked)."""
        if (frame.call_id is None) == (frame.meeting_id is None):
            raise XtError("request.invalid", "A signal names exactly one of call_id and meeting_id.")
        if frame.description is None and frame.candidate is None and not frame.end_of_candidates:
            raise XtError("request.invalid", "A signal carries a description, a candidate or end_of_candidates.")
        if frame.description is not None:
            p.check_sdp(frame.description)
        p.check_candidate(frame.candidate)
        if frame.call_id is not None:
            await self.calls.check_peer(conn, frame.call_id, frame.to)
        else:
            await self.meetings.check_peer(conn, frame.meeting_id, frame.to)  # type: ignore[arg-type]
        out: dict[str, Any] = {"type": "signal", "from": conn.device_id, "from_user": conn.user_id}
        if frame.call_id:
            out["call_id"] = frame.call_id
        if frame.meeting_id:
            out["meeting_id"] = frame.meeting_id
        if frame.description is not None:
            out["description"] = msgspec.to_builtins(frame.description)
        if frame.candidate is not None:
            out["candidate"] = msgspec.to_builtins(frame.candidate)
        if frame.end_of_candidates:
            out["end_of_candidates"] = True
        await self.to_device(frame.to, out)
        return {}

    # ---- routing -----------------------------------------------------------------------------------

    async def to_device(self, device_id: str, payload: dict[str, Any]) -> None:
        await self.state.publish(f"device:{device_id}", p.encode(payload))

    async def to_user(self, user_id: str, payload: dict[str, Any]) -> None:
        await self.state.publish(f"user:{user_id}", p.encode(payload))

    async def _on_channel(self, channel: str, frame: bytes) -> None:
        kind, _, target = channel.partition(":")
        if kind == "device":
            local_peer = self.local_channels.get(target)
            if local_peer is not None:
                await local_peer(frame)
                return
            conn = self.local.get(target)
            if conn is not None:
                conn.send(frame)
        elif kind == "user":
            for conn in list(self.by_user.get(target, ())):
                conn.send(frame)


async def _pong() -> dict[str, Any]:
    return {"time": time.time()}


def _json_response(status: HTTPStatus, body: Any) -> Response:
    data = json.dumps(body, ensure_ascii=False).encode()
    return Response(status.value, status.phrase, Headers({"Content-Type": "application/json",
                                                          "Content-Length": str(len(data))}), data)


async def start_signaling(settings: Settings, chat: Any, *, host: str | None = None, port: int | None = None,
                          verifier: TokenVerifier | None = None, janus: Any = None) -> SignalingService:
    """Start the service. ``chat`` is the messaging server's Services (this process's, or built for it)."""
    if verifier is None:
        verifier = await load_verifier(settings, chat)
    state: State
    if settings.redis_url:
        from .state import RedisState

        state = RedisState(settings.redis_url)
    else:
        state = MemoryState()
    if janus is None and settings.janus_urls:
        from .janus import JanusPool

        janus = JanusPool(list(settings.janus_urls))
    service = SignalingService(settings, verifier, chat, state, janus=janus)
    await service.start(host or settings.host, settings.signaling_port if port is None else port)
    log.info("signaling service at %s", service.url)
    return service


async def load_verifier(settings: Settings, chat: Any) -> TokenVerifier:
    """The published public keys: fetched from XT_JWKS_URL (signaling as its own process), else the
    messaging services' own verifier (the same keys the server publishes)."""
    if settings.jwks_url:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(settings.jwks_url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                response.raise_for_status()
                jwks = await response.json()
        return TokenVerifier(jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    return chat.verifier
