"""Driver for the Janus WebRTC server's VideoRoom plugin: large meetings through an SFU.

Browsers and phones never speak the Janus API. The signaling service speaks it on their behalf and
relays JSEP: it joins each participant as a *publisher* (their offer in, Janus's answer out) and gives
each participant one *subscriber* handle that receives the other participants' feeds (Janus's offer
out, the participant's answer in). Room notifications (a new feed was published, a feed was
unpublished, a participant left) arrive on :attr:`JanusRoom.events` so the service can tell the
others to subscribe or drop a feed.

Transport: the Janus **HTTP API** (aiohttp, already a dependency) with one long poll per instance.

* It is the transport Janus is deployed with anyway for health checks (``GET /janus/info``), so one
  transport plugin is enough and the pool's liveness probe and the API share a port and an ACL.
* Requests are independent HTTP exchanges: a dropped TCP connection or a restart of one signaling
  process does not tear down the Janus session (Janus destroys sessions created over a WebSocket when
  that socket closes), and every request gets its own timeout without a reconnect state machine.
* One Janus *session* per instance carries every handle, so the long poll (``GET /janus/<session>``,
  up to ``maxev`` events per answer) is a single open request per instance, not one per participant.
  The rate of signaling events in a meeting (joins, leaves, renegotiations) is low, so the cost of
  HTTP over a persistent socket does not matter; media never passes through this driver.

Model: :class:`JanusInstance` is one Janus server (session, keepalive, long poll, a *manager* handle
for synchronous room requests). :meth:`JanusInstance.create_room` also joins a hidden *monitor*
participant that never publishes: it receives the room's notifications exactly once, however many
participant handles exist, and turns them into :class:`JanusEvent` values on the room.
:class:`JanusHandle` is one plugin handle (a participant's publisher, or subscriber); its own events
(``webrtcup``, ``hangup``, trickled candidates, an unsolicited renegotiation offer) go to
:attr:`JanusHandle.events`. :class:`JanusPool` places each room on the instance with the fewest rooms
among those that answer ``info``, and remembers where each room lives.

Every request has a timeout. Failures raise :class:`~xietong.server.errors.XtError`:
``meeting.sfu_unavailable`` (Janus cannot be reached, or lost our session: retry, maybe elsewhere),
``meeting.sfu_failed`` (Janus refused; ``details`` carries ``janus_code`` and ``reason``),
``meeting.bad_sdp`` (the client's SDP was rejected), ``meeting.full`` (the room's publisher cap),
and ``not_found`` / ``conflict.exists`` for rooms and feeds. Room secrets, pins and the API secret
are never logged and never put into error details.

Feeds that go away: when a publisher *unpublishes*, Janus 1.1 renegotiates its subscribers itself
(an ``updated`` handle event with an offer: relay it, answer with :meth:`JanusInstance.start`).
When a publisher *leaves* or its handle is detached it does not (the stream just goes inactive): on
the room's ``leaving`` event the service calls :meth:`JanusInstance.update_subscription` with
``unsubscribe=[feed]`` on each subscriber handle and relays the offer it returns (this works after
the feed is gone; ``None`` means there was nothing left to renegotiate).

Several signaling processes: a Janus room belongs to no session. The process that creates it owns
it (destroys it on :meth:`JanusInstance.close`); others call :meth:`JanusInstance.adopt_room` to get
its events, and attach participants' handles to it directly.

ICE: Janus half-trickles by default (its candidates are in its SDP; it accepts trickled ones).
Configured with ``full_trickle`` it trickles its own: those arrive as ``trickle`` events on the
handle, ``candidate=None`` meaning end of candidates. Clients that put every candidate into their SDP
(aiortc) pass ``trickle=False`` to :meth:`JanusInstance.publish` / :meth:`JanusInstance.start`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets as _secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, Union

import aiohttp

from xietong.server.errors import XtError

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
RoomId = Union[int, str]
FeedId = Union[int, str]
EventCallback = Callable[["JanusEvent"], Union[None, Awaitable[None]]]

EVENT_QUEUE_SIZE = 256
# The display name of the hidden participant that listens to each room's notifications. It never
# publishes, so clients never see it, except as a ``joining`` event in rooms with notify_joining.
MONITOR_DISPLAY = "xietong-monitor"

# Janus core (apierror.h) and VideoRoom plugin error codes this driver tells apart.
_SDP_ERRORS = {464, 465, 431, 437}  # JSEP unknown type / invalid SDP; plugin: invalid SDP type / SDP
_SESSION_GONE = {458}  # no such session (Janus restarted, or our session timed out)
_UNAVAILABLE = {472}  # not accepting new sessions
_NOT_FOUND = {426, 428}  # no such room / feed
_EXISTS = {427, 436}  # room exists / participant id exists
_FULL = {432}  # maximum number of publishers reached


def _error_for(code: int | None, reason: str | None, what: str) -> XtError:
    details: dict[str, Any] = {"janus_code": code, "reason": (reason or "")[:200], "request": what}
    if code in _SDP_ERRORS:
        return XtError("meeting.bad_sdp", details=details)
    if code in _SESSION_GONE or code in _UNAVAILABLE:
        return XtError("meeting.sfu_unavailable", details=details)
    if code in _NOT_FOUND:
        return XtError("not_found", details=details)
    if code in _EXISTS:
        return XtError("conflict.exists", details=details)
    if code in _FULL:
        return XtError("meeting.full", details=details)
    return XtError("meeting.sfu_failed", details=details)


@dataclass(frozen=True)
class JanusEvent:
    """Something Janus told us without being asked (or a result of a handle going away).

    Room events (on :attr:`JanusRoom.events`): ``published`` (a feed is available or changed its
    streams: subscribe to it), ``unpublished``, ``leaving``, ``joining`` (only with
    ``notify_joining``), ``kicked``, ``talking``/``stopped-talking`` (with audio level events),
    ``destroyed`` and ``sfu_lost`` (the Janus instance lost our session: the room is gone).

    Handle events (on :attr:`JanusHandle.events`): ``webrtcup``, ``hangup``, ``media``, ``slowlink``,
    ``trickle`` (``candidate``; ``None`` = end of candidates; with a full-trickle Janus these can arrive
    before :meth:`JanusInstance.publish`/``subscribe`` returns the SDP: relay them after it),
    ``updated`` (a subscriber's streams
    changed; relay ``jsep`` — an offer — to the client and call :meth:`JanusInstance.start` with its
    answer), ``detached``, ``sfu_lost``, and ``event`` for any other plugin event (room notifications
    also reach every publisher handle; the room's queue is the one to act on).
    """

    kind: str
    room: RoomId | None = None
    feed: FeedId | None = None
    display: str | None = None
    streams: tuple[dict[str, Any], ...] = ()
    candidate: dict[str, Any] | None = None
    jsep: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False)


class _EventSink:
    """Events go to ``on_event`` when set (a function or coroutine function), else to ``events``,
    a bounded queue that drops the oldest event when nobody reads it."""

    def __init__(self, on_event: EventCallback | None):
        self.on_event = on_event
        self.events: asyncio.Queue[JanusEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._callbacks: set[asyncio.Task[None]] = set()

    def _emit(self, event: JanusEvent) -> None:
        if self.on_event is not None:
            try:
                result = self.on_event(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._callbacks.add(task)
                    task.add_done_callback(self._callback_done)
            except Exception:
                log.exception("janus event callback failed for %s", event.kind)
            return
        if self.events.full():
            self.events.get_nowait()
        self.events.put_nowait(event)

    def _callback_done(self, task: asyncio.Task[None]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("janus event callback failed", exc_info=task.exception())


class JanusHandle(_EventSink):
    """One VideoRoom plugin handle: a publisher, a subscriber, or the driver's own manager/monitor."""

    def __init__(self, instance: JanusInstance, handle_id: int, on_event: EventCallback | None = None):
        super().__init__(on_event)
        self.instance = instance
        self.id = handle_id
        self.role: str | None = None  # "publisher" | "subscriber" | "manager" | "monitor"
        self.room: RoomId | None = None
        self.feed_id: FeedId | None = None  # publisher: its feed id in the room
        self.private_id: int | None = None  # publisher: pass to subscribe() to tie subscriptions to it
        self.display: str | None = None
        self.publishers: list[dict[str, Any]] = []  # publisher: the feeds already there when it joined
        self.streams: list[dict[str, Any]] = []  # subscriber: Janus's stream list (mid, feed_id, type...)
        self.published = False
        self.joined = False
        self.detached = False
        self.webrtc_up = asyncio.Event()

    def __repr__(self) -> str:
        return f"<JanusHandle {self.role} {self.id} room={self.room} feed={self.feed_id}>"

    def feed_for_mid(self, mid: str) -> FeedId | None:
        """Subscriber: which publisher's feed the m-line ``mid`` carries."""
        for stream in self.streams:
            if str(stream.get("mid")) == str(mid):
                return stream.get("feed_id")
        return None

    def _deliver(self, msg: dict[str, Any]) -> None:
        kind = msg.get("janus")
        if kind == "event":
            data = (msg.get("plugindata") or {}).get("data") or {}
            jsep = msg.get("jsep")
            if data.get("videoroom") in ("attached", "updated") and "streams" in data:
                self.streams = list(data["streams"])
            if self.role == "monitor":
                room = self.instance.rooms.get(self.room) if self.room is not None else None
                if room is not None:
                    for event in _room_events(data, self.room):
                        room._emit(event)
                return
            name = "updated" if data.get("videoroom") == "updated" else "event"
            self._emit(JanusEvent(name, room=data.get("room", self.room), jsep=jsep,
                                  streams=tuple(data.get("streams") or ()), data=data))
        elif kind == "trickle":
            candidate = msg.get("candidate") or {}
            self._emit(JanusEvent("trickle", room=self.room,
                                  candidate=None if candidate.get("completed") else candidate))
        elif kind == "webrtcup":
            self.webrtc_up.set()
            self._emit(JanusEvent("webrtcup", room=self.room))
        elif kind in ("hangup", "media", "slowlink"):
            if kind == "hangup":
                self.webrtc_up.clear()
            self._emit(JanusEvent(str(kind), room=self.room, data=dict(msg)))
        elif kind == "detached":
            self.detached = True
            self._emit(JanusEvent("detached", room=self.room))


def _room_events(data: dict[str, Any], room_id: RoomId | None) -> list[JanusEvent]:
    """Turn a VideoRoom notification seen by the monitor into room events."""
    room = data.get("room", room_id)
    name = data.get("videoroom")
    events: list[JanusEvent] = []
    if name == "destroyed":
        return [JanusEvent("destroyed", room=room, data=data)]
    if name in ("talking", "stopped-talking"):
        return [JanusEvent(name, room=room, feed=data.get("id"), data=data)]
    if name not in ("event", "joined"):
        return events
    for pub in data.get("publishers") or ():
        if pub.get("dummy"):
            continue
        events.append(JanusEvent("published", room=room, feed=pub.get("id"), display=pub.get("display"),
                                 streams=tuple(pub.get("streams") or ()), data=pub))
    joining = data.get("joining")
    if isinstance(joining, dict) and joining.get("display") != MONITOR_DISPLAY:
        events.append(JanusEvent("joining", room=room, feed=joining.get("id"), display=joining.get("display"),
                                 data=joining))
    for key in ("unpublished", "leaving", "kicked"):
        value = data.get(key)
        if value is not None and value != "ok":  # "ok" is about the monitor itself
            events.append(JanusEvent(key, room=room, feed=value, display=data.get("display"), data=data))
    return events


class JanusRoom(_EventSink):
    """A VideoRoom on one instance. ``events`` carries the room's notifications (see JanusEvent)."""

    def __init__(self, instance: JanusInstance, room_id: RoomId, *, secret: str | None, pin: str | None,
                 on_event: EventCallback | None):
        super().__init__(on_event)
        self.instance = instance
        self.id = room_id
        self._secret = secret
        self._pin = pin
        self.monitor: JanusHandle | None = None
        self.owned = False  # created by this driver (or taken back after a lost session): close() destroys it
        self.created_at = time.monotonic()

    def __repr__(self) -> str:
        return f"<JanusRoom {self.id} on {self.instance.url}>"


class JanusInstance:
    """A client for one Janus server over its HTTP API. ``url`` is the API base,
    e.g. ``http://127.0.0.1:8088/janus``."""

    def __init__(self, url: str, *, api_secret: str | None = None, admin_key: str | None = None,
                 request_timeout: float = 10.0, probe_timeout: float = 2.0, keepalive_interval: float = 25.0,
                 max_events: int = 16, on_lost: Callable[[JanusInstance], None] | None = None):
        self.url = url.rstrip("/")
        self._api_secret = api_secret
        self._admin_key = admin_key
        self.request_timeout = request_timeout
        self.probe_timeout = probe_timeout
        self.keepalive_interval = keepalive_interval
        self.max_events = max_events
        self.on_lost = on_lost
        self.session_id: int | None = None
        self.rooms: dict[RoomId, JanusRoom] = {}
        self.handles: dict[int, JanusHandle] = {}
        self.last_error: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._manager: JanusHandle | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._connect_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<JanusInstance {self.url} session={self.session_id} rooms={len(self.rooms)}>"

    @property
    def connected(self) -> bool:
        return self.session_id is not None

    # ---- lifecycle -------------------------------------------------------------------------------

    async def info(self, timeout: float | None = None) -> dict[str, Any]:
        """``GET /info``: the server's description; raises ``meeting.sfu_unavailable`` if it does not answer."""
        http = self._client()
        try:
            async with asyncio.timeout(timeout or self.probe_timeout):
                async with http.get(f"{self.url}/info") as resp:
                    body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise self._unavailable("info", exc) from None
        if not isinstance(body, dict) or body.get("janus") != "server_info":
            raise XtError("meeting.sfu_unavailable", details={"request": "info", "reason": "not a Janus server"})
        return body

    async def connect(self) -> None:
        """Create the session, start the long poll and keepalives, attach the manager handle.
        Idempotent; after a lost session it connects afresh."""
        async with self._connect_lock:
            if self.connected:
                return
            info = await self.info()
            if VIDEOROOM not in (info.get("plugins") or {}):
                raise XtError("meeting.sfu_unavailable",
                              details={"request": "info", "reason": "the VideoRoom plugin is not loaded"})
            body = await self._send("", {"janus": "create"}, "create")
            self.session_id = int(body["data"]["id"])
            self._tasks = [asyncio.create_task(self._poll_loop(self.session_id), name=f"janus-poll-{self.url}"),
                           asyncio.create_task(self._keepalive_loop(self.session_id),
                                               name=f"janus-keepalive-{self.url}")]
            try:
                self._manager = await self.attach(role="manager")
            except BaseException:
                await self._drop_session()
                raise
            log.info("janus: connected to %s (session %s)", self.url, self.session_id)

    async def close(self, *, destroy_rooms: bool = True) -> None:
        """Destroy the rooms created here (unless told not to; adopted rooms are left alone), the
        session, and the HTTP client."""
        if self.connected and destroy_rooms:
            for room_id in [r.id for r in self.rooms.values() if r.owned]:
                try:
                    await self.destroy_room(room_id)
                except XtError as exc:
                    log.warning("janus: could not destroy room %s on %s: %s", room_id, self.url, exc.code)
        session_id = self.session_id
        await self._drop_session()  # stop polling first: no requests for a destroyed session
        if session_id is not None:
            try:
                await self._send(f"/{session_id}", {"janus": "destroy"}, "destroy")
            except XtError:
                pass
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _drop_session(self) -> None:
        self.session_id = None
        self._manager = None
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._fail_pending("session closed")
        self.handles.clear()
        self.rooms.clear()

    def _lost(self, session_id: int, reason: str) -> None:
        """The session is gone (Janus restarted, timed us out, or stopped answering)."""
        if self.session_id != session_id:
            return
        log.warning("janus: lost session on %s: %s", self.url, reason)
        self.last_error = reason
        rooms, handles = list(self.rooms.values()), list(self.handles.values())
        self.session_id = None
        self._manager = None
        self._fail_pending(reason)
        self.rooms.clear()
        self.handles.clear()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        for room in rooms:
            room._emit(JanusEvent("sfu_lost", room=room.id, data={"reason": reason}))
        for handle in handles:
            if handle.role not in ("manager", "monitor"):
                handle.detached = True
                handle._emit(JanusEvent("sfu_lost", room=handle.room, data={"reason": reason}))
        if self.on_lost is not None:
            try:
                self.on_lost(self)
            except Exception:
                log.exception("janus: on_lost callback failed")

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(XtError("meeting.sfu_unavailable", details={"reason": reason}))

    # ---- plumbing --------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                timeout=aiohttp.ClientTimeout(total=None))
        return self._http

    def _unavailable(self, what: str, exc: BaseException) -> XtError:
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        self.last_error = f"{what}: {reason}"
        return XtError("meeting.sfu_unavailable", details={"request": what, "reason": reason})

    def _session_path(self) -> str:
        if self.session_id is None:
            raise XtError("meeting.sfu_unavailable", details={"reason": "not connected"})
        return f"/{self.session_id}"

    async def _post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        body = dict(body)
        body.setdefault("transaction", _secrets.token_urlsafe(12))
        if self._api_secret:
            body["apisecret"] = self._api_secret
        try:
            async with self._client().post(f"{self.url}{path}", json=body) as resp:
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise self._unavailable(what, exc) from None
        if not isinstance(answer, dict):
            raise XtError("meeting.sfu_failed", details={"request": what, "reason": "malformed answer"})
        if answer.get("janus") == "error":
            error = answer.get("error") or {}
            code = error.get("code")
            if code in _SESSION_GONE and self.session_id is not None and path.startswith(f"/{self.session_id}"):
                self._lost(self.session_id, "no such session")
            raise _error_for(code, error.get("reason"), what)
        return answer

    async def _send(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """A request answered in the HTTP response itself, with the request timeout."""
        try:
            async with asyncio.timeout(self.request_timeout):
                return await self._post(path, body, what)
        except TimeoutError as exc:
            raise self._unavailable(what, exc) from None

    async def _message(self, handle: JanusHandle, body: dict[str, Any], what: str, *,
                       jsep: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A plugin request. Synchronous ones are answered with ``success``; asynchronous ones with
        ``ack`` and later an event carrying the same transaction (via the long poll)."""
        if handle.detached:
            raise XtError("conflict.state", "The Janus handle was detached.", details={"request": what})
        transaction = _secrets.token_urlsafe(12)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        try:
            async with asyncio.timeout(self.request_timeout):
                answer = await self._post(f"{self._session_path()}/{handle.id}", request, what)
                if answer.get("janus") == "success":
                    msg = answer
                elif answer.get("janus") == "ack":
                    msg = await future
                else:
                    raise XtError("meeting.sfu_failed", details={"request": what, "reason": "unexpected answer"})
        except TimeoutError as exc:
            raise self._unavailable(what, exc) from None
        finally:
            self._pending.pop(transaction, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a lost session may fail it while we were raising otherwise
        if msg.get("janus") == "error":
            error = msg.get("error") or {}
            raise _error_for(error.get("code"), error.get("reason"), what)
        data = (msg.get("plugindata") or {}).get("data") or {}
        if "error_code" in data or data.get("videoroom") == "event" and "error" in data:
            raise _error_for(data.get("error_code"), data.get("error"), what)
        return data, msg.get("jsep")

    async def _poll_loop(self, session_id: int) -> None:
        failures = 0
        failing_since: float | None = None
        url = f"{self.url}/{session_id}"
        params = {"maxev": str(self.max_events)}
        if self._api_secret:
            params["apisecret"] = self._api_secret
        while self.session_id == session_id:
            try:
                params["rid"] = str(int(time.time() * 1000))
                async with asyncio.timeout(30 + self.request_timeout):  # Janus answers idle polls after 30 s
                    async with self._client().get(url, params=params) as resp:
                        payload = await resp.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures += 1
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > max(self.keepalive_interval, self.request_timeout):
                    self._lost(session_id, f"long poll failing ({type(exc).__name__})")
                    return
                await asyncio.sleep(min(0.2 * failures, 2.0))
                continue
            if isinstance(payload, dict) and payload.get("janus") == "error" \
                    and (payload.get("error") or {}).get("code") not in _SESSION_GONE:
                # e.g. a wrong API secret: Janus answers at once, so back off instead of spinning
                failures += 1
                log.warning("janus: long poll on %s refused: %s", self.url, (payload.get("error") or {}).get("code"))
                await asyncio.sleep(min(0.5 * failures, 5.0))
                continue
            failures, failing_since = 0, None
            for msg in payload if isinstance(payload, list) else [payload]:
                if isinstance(msg, dict):
                    try:
                        self._dispatch(session_id, msg)
                    except Exception:
                        log.exception("janus: could not handle an event from %s", self.url)

    def _dispatch(self, session_id: int, msg: dict[str, Any]) -> None:
        kind = msg.get("janus")
        if kind == "keepalive":
            return
        if kind == "error":
            code = (msg.get("error") or {}).get("code")
            if code in _SESSION_GONE:
                self._lost(session_id, "no such session")
                return
        if kind == "timeout":
            self._lost(session_id, "session timed out")
            return
        transaction = msg.get("transaction")
        if transaction is not None and kind in ("event", "success", "error"):
            future = self._pending.get(transaction)
            if future is not None and not future.done():
                future.set_result(msg)
                return
        sender = msg.get("sender")
        handle = self.handles.get(sender) if sender is not None else None
        if handle is not None:
            handle._deliver(msg)
            if kind == "detached":
                self.handles.pop(handle.id, None)

    async def _keepalive_loop(self, session_id: int) -> None:
        failing_since: float | None = None
        while self.session_id == session_id:
            await asyncio.sleep(self.keepalive_interval)
            try:
                await self._send(f"/{session_id}", {"janus": "keepalive"}, "keepalive")
                failing_since = None
            except XtError as exc:
                if self.session_id != session_id:
                    return
                failing_since = failing_since or time.monotonic()
                log.warning("janus: keepalive to %s failed: %s", self.url, exc.details.get("reason"))
                if time.monotonic() - failing_since > 2 * self.keepalive_interval:
                    self._lost(session_id, "keepalives failing")
                    return

    # ---- handles ---------------------------------------------------------------------------------

    async def attach(self, *, role: str | None = None, opaque_id: str | None = None,
                     on_event: EventCallback | None = None) -> JanusHandle:
        """Attach a VideoRoom handle to our session."""
        if not self.connected:
            await self.connect()
        body: dict[str, Any] = {"janus": "attach", "plugin": VIDEOROOM}
        if opaque_id:
            body["opaque_id"] = opaque_id
        answer = await self._send(self._session_path(), body, "attach")
        handle = JanusHandle(self, int(answer["data"]["id"]), on_event)
        handle.role = role
        self.handles[handle.id] = handle
        return handle

    async def detach(self, handle: JanusHandle) -> None:
        """Detach a handle (Janus closes its PeerConnection; a publisher's feed is unpublished).
        Idempotent; a handle Janus no longer knows counts as detached."""
        if handle.detached or handle.instance is not self or not self.connected:
            handle.detached = True
            self.handles.pop(handle.id, None)
            return
        try:
            await self._send(f"{self._session_path()}/{handle.id}", {"janus": "detach"}, "detach")
        except XtError as exc:
            if exc.code != "meeting.sfu_failed" or exc.details.get("janus_code") != 459:
                raise
        finally:
            handle.detached = True
            self.handles.pop(handle.id, None)

    async def leave(self, handle: JanusHandle) -> None:
        """Leave the room (others see ``unpublished``/``leaving``) and detach the handle."""
        if handle.joined and not handle.detached and self.connected:
            try:
                await self._message(handle, {"request": "leave"}, "leave")
            except XtError as exc:
                log.info("janus: leave on handle %s failed (%s); detaching", handle.id, exc.code)
            handle.joined = False
        await self.detach(handle)

    async def trickle(self, handle: JanusHandle, candidate: Mapping[str, Any] | None) -> None:
        """Relay one ICE candidate from the client (``{"candidate", "sdpMid", "sdpMLineIndex"}``);
        ``None`` means the client has no more candidates."""
        if candidate is not None and not isinstance(candidate.get("candidate"), str):
            raise XtError("request.invalid", "An ICE candidate needs a `candidate` string.")
        if handle.detached:
            raise XtError("conflict.state", "The Janus handle was detached.", details={"request": "trickle"})
        payload: dict[str, Any] = {"completed": True} if candidate is None else {
            k: candidate[k] for k in ("candidate", "sdpMid", "sdpMLineIndex") if k in candidate}
        await self._send(f"{self._session_path()}/{handle.id}", {"janus": "trickle", "candidate": payload}, "trickle")

    # ---- rooms -----------------------------------------------------------------------------------

    async def create_room(self, room_id: RoomId, *, publishers: int = 6, secret: str | None = None,
                          pin: str | None = None, description: str | None = None, audiocodec: str = "opus",
                          videocodec: str = "vp8", bitrate: int = 512_000, fir_freq: int = 10,
                          notify_joining: bool = False, audiolevel_event: bool = False,
                          extra: Mapping[str, Any] | None = None, on_event: EventCallback | None = None,
                          exist_ok: bool = False) -> JanusRoom:
        """Create a (non-permanent, private) room and join its monitor. ``extra`` adds other
        VideoRoom ``create`` options. ``on_event`` receives the room's events instead of ``events``.
        Janus rooms outlive the session that created them (and are shared by every signaling
        process): with ``exist_ok=True`` an existing room of that id is adopted instead (see
        :meth:`adopt_room`), e.g. to take a room back after our session was lost."""
        if not isinstance(publishers, int) or publishers < 1:
            raise XtError("request.invalid", "`publishers` must be a positive integer.")
        if room_id in self.rooms:
            if exist_ok:
                return self.rooms[room_id]
            raise XtError("conflict.exists", details={"room": room_id})
        await self.connect()
        body: dict[str, Any] = {
            "request": "create", "room": room_id, "permanent": False, "is_private": True,
            "description": description or f"xietong {room_id}", "publishers": publishers,
            "audiocodec": audiocodec, "videocodec": videocodec, "bitrate": bitrate, "fir_freq": fir_freq,
            "notify_joining": notify_joining, "audiolevel_event": audiolevel_event, **(extra or {})}
        if secret:
            body["secret"] = secret
        if pin:
            body["pin"] = pin
        if self._admin_key:
            body["admin_key"] = self._admin_key
        assert self._manager is not None
        created = True
        try:
            await self._message(self._manager, body, "create_room")
        except XtError as exc:
            if exc.code != "conflict.exists" or not exist_ok:
                raise
            created = False
            log.info("janus: room %s already exists on %s; adopting it", room_id, self.url)
        room = await self._open_room(room_id, secret=secret, pin=pin, on_event=on_event, created=created)
        room.owned = True
        if created:
            log.info("janus: created room %s on %s", room_id, self.url)
        return room

    async def adopt_room(self, room_id: RoomId, *, secret: str | None = None, pin: str | None = None,
                         on_event: EventCallback | None = None) -> JanusRoom:
        """Follow a room that exists in Janus but was not created here (another signaling process
        created it, or our session was lost): its monitor joins and its events flow. An adopted room
        is not destroyed by :meth:`close`. ``not_found`` if Janus has no such room."""
        if room_id in self.rooms:
            return self.rooms[room_id]
        if not await self.room_exists(room_id):
            raise XtError("not_found", details={"room": room_id})
        return await self._open_room(room_id, secret=secret, pin=pin, on_event=on_event, created=False)

    async def _open_room(self, room_id: RoomId, *, secret: str | None, pin: str | None,
                         on_event: EventCallback | None, created: bool) -> JanusRoom:
        room = JanusRoom(self, room_id, secret=secret, pin=pin, on_event=on_event)
        self.rooms[room_id] = room
        try:
            monitor = await self.attach(role="monitor")
            monitor.room = room_id
            room.monitor = monitor
            join: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": room_id,
                                    "display": MONITOR_DISPLAY}
            if pin:
                join["pin"] = pin
            await self._message(monitor, join, "join_monitor")
            monitor.joined = True
        except BaseException:
            try:
                if created:
                    await self.destroy_room(room_id)
                else:
                    self.rooms.pop(room_id, None)
                    if room.monitor is not None:
                        await self.detach(room.monitor)
            except XtError:
                pass
            raise
        return room

    async def destroy_room(self, room_id: RoomId, *, secret: str | None = None) -> None:
        """Destroy a room (participants get a ``destroyed`` event). A room Janus does not know
        counts as destroyed."""
        room = self.rooms.pop(room_id, None)
        if not self.connected or self._manager is None:
            return
        body: dict[str, Any] = {"request": "destroy", "room": room_id, "permanent": False}
        secret = secret or (room._secret if room else None)
        if secret:
            body["secret"] = secret
        try:
            await self._message(self._manager, body, "destroy_room")
        except XtError as exc:
            if exc.code != "not_found":
                raise
        finally:
            if room is not None and room.monitor is not None:
                try:
                    await self.detach(room.monitor)
                except XtError:
                    pass
        log.info("janus: destroyed room %s on %s", room_id, self.url)

    async def room_exists(self, room_id: RoomId) -> bool:
        await self.connect()
        assert self._manager is not None
        data, _ = await self._message(self._manager, {"request": "exists", "room": room_id}, "exists")
        return bool(data.get("exists"))

    async def moderate(self, room_id: RoomId, feed_id: FeedId, mid: str, *, mute: bool,
                       secret: str | None = None) -> None:
        """Mute (or unmute) one stream of a publisher at the SFU: Janus stops relaying it to every
        subscriber, whatever the publisher's client sends. ``mid`` names the stream (its m-line)."""
        await self.connect()
        assert self._manager is not None
        body: dict[str, Any] = {"request": "moderate", "room": room_id, "id": feed_id, "mid": mid, "mute": mute}
        if secret is not None:
            body["secret"] = secret
        await self._message(self._manager, body, "moderate")

    async def list_participants(self, room_id: RoomId) -> list[dict[str, Any]]:
        """The room's participants (without the monitor): ``id``, ``display``, ``publisher``..."""
        await self.connect()
        assert self._manager is not None
        data, _ = await self._message(self._manager, {"request": "listparticipants", "room": room_id},
                                      "listparticipants")
        return [p for p in data.get("participants") or () if p.get("display") != MONITOR_DISPLAY]

    def _pin(self, room_id: RoomId, pin: str | None) -> dict[str, Any]:
        room = self.rooms.get(room_id)
        pin = pin or (room._pin if room else None)
        return {"pin": pin} if pin else {}

    # ---- publishers ------------------------------------------------------------------------------

    async def join_as_publisher(self, room_id: RoomId, display: str, *, feed_id: FeedId | None = None,
                                pin: str | None = None, opaque_id: str | None = None,
                                on_event: EventCallback | None = None) -> JanusHandle:
        """Attach a handle and join the room as a publisher (not yet sending). ``handle.publishers``
        lists the feeds already in the room; ``handle.feed_id`` is this participant's feed."""
        if not isinstance(display, str) or display == MONITOR_DISPLAY:
            raise XtError("request.invalid", "`display` must be a string.")
        handle = await self.attach(role="publisher", opaque_id=opaque_id, on_event=on_event)
        handle.room, handle.display = room_id, display
        body: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": room_id, "display": display,
                                **self._pin(room_id, pin)}
        if feed_id is not None:
            body["id"] = feed_id
        try:
            data, _ = await self._message(handle, body, "join_publisher")
        except BaseException:
            await self._detach_quietly(handle)
            raise
        handle.joined = True
        handle.feed_id = data.get("id")
        handle.private_id = data.get("private_id")
        handle.publishers = [p for p in data.get("publishers") or () if not p.get("dummy")]
        return handle

    async def publish(self, handle: JanusHandle, offer_sdp: str, *, trickle: bool = True,
                      bitrate: int | None = None, descriptions: Sequence[Mapping[str, str]] | None = None,
                      extra: Mapping[str, Any] | None = None) -> str:
        """Send the participant's offer; returns Janus's answer SDP. The first call publishes, later
        ones renegotiate (``configure``). ``trickle=False`` tells Janus every candidate is in the SDP."""
        if handle.role != "publisher" or not handle.joined:
            raise XtError("conflict.state", "Join the room as a publisher first.")
        if not isinstance(offer_sdp, str) or not offer_sdp.strip():
            raise XtError("meeting.bad_sdp", "The offer is empty.")
        body: dict[str, Any] = {"request": "configure" if handle.published else "publish", **(extra or {})}
        if bitrate is not None:
            body["bitrate"] = bitrate
        if descriptions:
            body["descriptions"] = [dict(d) for d in descriptions]
        data, jsep = await self._message(handle, body, "publish",
                                         jsep={"type": "offer", "sdp": offer_sdp, "trickle": trickle})
        if not jsep or jsep.get("type") != "answer" or not jsep.get("sdp"):
            raise XtError("meeting.sfu_failed", details={"request": "publish", "reason": "no answer from Janus"})
        handle.published = True
        return str(jsep["sdp"])

    async def unpublish(self, handle: JanusHandle) -> None:
        """Stop publishing but stay in the room (the room reports ``unpublished``)."""
        if handle.published:
            await self._message(handle, {"request": "unpublish"}, "unpublish")
            handle.published = False

    # ---- subscribers -----------------------------------------------------------------------------

    @staticmethod
    def _streams(feeds: Iterable[FeedId | Mapping[str, Any]]) -> list[dict[str, Any]]:
        streams = []
        for feed in feeds:
            if isinstance(feed, Mapping):
                if "feed" not in feed:
                    raise XtError("request.invalid", "Every stream needs a `feed`.")
                streams.append(dict(feed))
            elif isinstance(feed, (int, str)) and not isinstance(feed, bool):
                streams.append({"feed": feed})
            else:
                raise XtError("request.invalid", "Feeds are ids or {feed, mid} objects.")
        return streams

    async def subscribe(self, room_id: RoomId, feeds: Iterable[FeedId | Mapping[str, Any]], *,
                        private_id: int | None = None, pin: str | None = None, opaque_id: str | None = None,
                        on_event: EventCallback | None = None) -> tuple[JanusHandle, str]:
        """Attach a subscriber handle receiving ``feeds`` (feed ids, or ``{"feed", "mid"}`` to pick
        single streams) in one PeerConnection. Returns the handle and Janus's offer SDP; answer it
        with :meth:`start`. ``handle.streams`` / ``handle.feed_for_mid`` map m-lines to feeds."""
        streams = self._streams(feeds)
        if not streams:
            raise XtError("request.invalid", "Subscribe to at least one feed.")
        handle = await self.attach(role="subscriber", opaque_id=opaque_id, on_event=on_event)
        handle.room = room_id
        body: dict[str, Any] = {"request": "join", "ptype": "subscriber", "room": room_id, "streams": streams,
                                **self._pin(room_id, pin)}
        if private_id is not None:
            body["private_id"] = private_id
        try:
            data, jsep = await self._message(handle, body, "subscribe")
            if not jsep or jsep.get("type") != "offer" or not jsep.get("sdp"):
                raise XtError("meeting.sfu_failed", details={"request": "subscribe", "reason": "no offer from Janus"})
        except BaseException:
            await self._detach_quietly(handle)
            raise
        handle.joined = True
        handle.streams = list(data.get("streams") or ())
        return handle, str(jsep["sdp"])

    async def start(self, handle: JanusHandle, answer_sdp: str, *, trickle: bool = True) -> None:
        """Send the subscriber's answer to Janus's offer (also after an ``updated`` offer)."""
        if handle.role != "subscriber" or not handle.joined:
            raise XtError("conflict.state", "Subscribe first.")
        if not isinstance(answer_sdp, str) or not answer_sdp.strip():
            raise XtError("meeting.bad_sdp", "The answer is empty.")
        await self._message(handle, {"request": "start"}, "start",
                            jsep={"type": "answer", "sdp": answer_sdp, "trickle": trickle})

    async def update_subscription(self, handle: JanusHandle, *,
                                  subscribe: Iterable[FeedId | Mapping[str, Any]] = (),
                                  unsubscribe: Iterable[FeedId | Mapping[str, Any]] = ()) -> str | None:
        """Add and/or drop feeds on a subscriber handle. Returns Janus's new offer (answer it with
        :meth:`start`), or ``None`` when nothing needed renegotiating."""
        if handle.role != "subscriber" or not handle.joined:
            raise XtError("conflict.state", "Subscribe first.")
        body: dict[str, Any] = {"request": "update"}
        add, drop = self._streams(subscribe), self._streams(unsubscribe)
        if add:
            body["subscribe"] = add
        if drop:
            body["unsubscribe"] = drop
        if not add and not drop:
            return None
        data, jsep = await self._message(handle, body, "update_subscription")
        if "streams" in data:
            handle.streams = list(data["streams"])
        return str(jsep["sdp"]) if jsep and jsep.get("sdp") else None

    async def _detach_quietly(self, handle: JanusHandle) -> None:
        try:
            await self.detach(handle)
        except XtError:
            pass


class JanusPool:
    """Several Janus instances. Each new room goes to the instance with the fewest rooms among
    those that answer ``info``; the pool remembers which instance holds which room."""

    def __init__(self, urls: Sequence[str], **instance_options: Any):
        if not urls:
            raise ValueError("JanusPool needs at least one Janus URL")
        self.instances = [JanusInstance(url, **instance_options) for url in urls]
        self._placement: dict[RoomId, JanusInstance] = {}

    def __repr__(self) -> str:
        return f"<JanusPool {len(self.instances)} instances, {len(self._placement)} rooms>"

    async def _alive(self, instance: JanusInstance) -> bool:
        try:
            await instance.info()
            return True
        except XtError:
            log.warning("janus: %s does not answer info (%s); skipping it", instance.url, instance.last_error)
            return False

    async def pick(self, *, exclude: Iterable[JanusInstance] = (),
                   prefer: JanusInstance | None = None) -> JanusInstance:
        """The connected instance that should take the next room: ``prefer`` if it answers, else the
        one with the fewest rooms among those that answer ``info`` (probed concurrently)."""
        excluded = list(exclude)
        candidates = [i for i in self.instances if i not in excluded]
        alive = await asyncio.gather(*(self._alive(i) for i in candidates))
        order = sorted((0 if i is prefer else 1, len(i.rooms), n)
                       for n, (i, ok) in enumerate(zip(candidates, alive)) if ok)
        for _, _, n in order:
            instance = candidates[n]
            try:
                await instance.connect()
                return instance
            except XtError as exc:
                log.warning("janus: cannot connect to %s: %s", instance.url, exc.code)
        raise XtError("meeting.sfu_unavailable", "No media server is available.",
                      details={"instances": len(self.instances)})

    async def create_room(self, room_id: RoomId, **room_options: Any) -> JanusRoom:
        """Create ``room_id`` on the best instance (options as :meth:`JanusInstance.create_room`).
        A room already placed on a connected instance is returned as it is. A room whose instance
        lost our session (``sfu_lost``) is taken back there if Janus still has it (participants
        served by other processes keep their media), or created afresh (after a Janus restart, or
        elsewhere if that instance is down)."""
        placed = self._placement.get(room_id)
        if placed is not None and room_id in placed.rooms:
            return placed.rooms[room_id]
        tried: list[JanusInstance] = []
        while True:
            instance = await self.pick(exclude=tried, prefer=placed)
            try:
                room = await instance.create_room(room_id, **{"exist_ok": instance is placed, **room_options})
            except XtError as exc:
                if exc.code != "meeting.sfu_unavailable":
                    raise
                tried.append(instance)
                continue
            self._placement[room_id] = instance
            return room

    def instance_for(self, room_id: RoomId) -> JanusInstance:
        """The instance holding ``room_id``; ``not_found`` if the pool placed no such room, and
        ``meeting.sfu_unavailable`` if its instance lost the room."""
        instance = self._placement.get(room_id)
        if instance is None:
            raise XtError("not_found", details={"room": room_id})
        if room_id not in instance.rooms:
            raise XtError("meeting.sfu_unavailable", details={"room": room_id, "reason": "the room was lost"})
        return instance

    def room(self, room_id: RoomId) -> JanusRoom:
        return self.instance_for(room_id).rooms[room_id]

    @property
    def rooms(self) -> dict[RoomId, str]:
        """room id → URL of the instance holding it."""
        return {room_id: instance.url for room_id, instance in self._placement.items()}

    async def destroy_room(self, room_id: RoomId) -> None:
        """Destroy the room and forget it. Idempotent; an unreachable instance only logs."""
        instance = self._placement.pop(room_id, None)
        if instance is None:
            return
        try:
            await instance.destroy_room(room_id)
        except XtError as exc:
            if exc.code != "meeting.sfu_unavailable":
                raise
            log.warning("janus: could not destroy room %s on %s (unreachable)", room_id, instance.url)

    async def close(self) -> None:
        """Destroy every room the pool placed, then close all instances."""
        for room_id in list(self._placement):
            try:
                await self.destroy_room(room_id)
            except XtError as exc:
                log.warning("janus: could not destroy room %s: %s", room_id, exc.code)
        await asyncio.gather(*(instance.close() for instance in self.instances), return_exceptions=True)
