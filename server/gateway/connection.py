"""One device's WebSocket: a bounded send queue drained by one writer task, and its rate limits.

Memory per connection is bounded: at most :data:`MAX_QUEUED_FRAMES` frames or
:data:`MAX_QUEUED_BYTES` bytes wait to be written, beyond one answer that may be larger on its own
(answers are bounded in bytes where they are built: sync, history). A consumer that cannot keep up (a phone on a
dying network, a stuck client) is closed with code 4009 and its queue released; it reconnects and
syncs, losing nothing. Frames are pre-encoded bytes shared by every recipient, so a queued frame
costs a reference, not a copy. Closing waits at most :data:`CLOSE_TIMEOUT` for the peer to take the
close frame; a peer that reads nothing any more is then cut off at the TCP level, so it cannot hold
the socket open.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque

from aiohttp import WSMsgType, web

from ..access import Principal
from ..ratelimit import TokenBucket

log = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 2000
MAX_QUEUED_BYTES = 8 * 1024 * 1024
CLOSE_TIMEOUT = 5.0  # seconds a closing peer has to take the close frame before its connection is aborted

# Close codes (docs/protocol.md).
CLOSE_NORMAL = 1000
CLOSE_RESTART = 1012  # server shutting down: reconnect (to another process)
CLOSE_AUTH_FAILED = 4001
CLOSE_AUTH_TIMEOUT = 4002
CLOSE_REPLACED = 4003  # a newer connection of the same device took over
CLOSE_REVOKED = 4004  # the device was signed out
CLOSE_FLOODING = 4008
CLOSE_SLOW_CONSUMER = 4009
CLOSE_PROTOCOL = 4010  # binary frames or other protocol misuse


class Connection:
    """A connected device. ``enqueue`` never blocks and never grows memory past the bounds."""

    FRAME_RATE = 30.0  # inbound frames per second, sustained
    FRAME_BURST = 60
    FLOOD_LIMIT = 100  # refused frames within FLOOD_WINDOW seconds before the socket is closed
    FLOOD_WINDOW = 10.0

    def __init__(self, ws: web.WebSocketResponse, principal: Principal, remote: str | None,
                 transport: asyncio.BaseTransport | None = None):
        self.ws = ws
        self.transport = transport
        self.principal = principal
        self.remote = remote
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.close_reason: str | None = None
        self.frames = TokenBucket(self.FRAME_RATE, self.FRAME_BURST, time.monotonic())
        self.refused: deque[float] = deque()
        self.writer_task: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None  # the close started by abort (the handler awaits it)
        self.typing_sent: dict[str, float] = {}
        self.presence_state = "active"  # the app in the foreground; "away" in the background
        # Presence is kept per connection, not per device: two sockets of one device on two
        # processes (a phone switching networks) must not remove each other's presence.
        self.presence_key = f"{principal.device_id}:{secrets.token_hex(4)}"
        self.watching: set[str] = set()  # users whose presence this device watches

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    @property
    def device_id(self) -> str:
        assert self.principal.device_id is not None
        return self.principal.device_id

    def start(self) -> None:
        self.writer_task = asyncio.get_running_loop().create_task(self._write_loop(), name=f"ws-writer-{self.device_id}")

    def enqueue(self, frame: bytes) -> None:
        if self.closed:
            return
        # One large answer (a sync with a long conversation list) is not slowness: a frame is always
        # admitted into an empty queue; the bounds apply to what piles up behind it.
        if self.queue and (len(self.queue) >= MAX_QUEUED_FRAMES or self.queued_bytes + len(frame) > MAX_QUEUED_BYTES):
            log.info("closing slow consumer %s (%d frames, %d bytes queued)", self.device_id, len(self.queue),
                     self.queued_bytes)
            self.abort(CLOSE_SLOW_CONSUMER, "slow consumer: send queue full")
            return
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        self.wake.set()

    async def _write_loop(self) -> None:
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.queue and not self.closed:
                    frame = self.queue.popleft()
                    self.queued_bytes -= len(frame)
                    await self.ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("writing to %s failed", self.device_id)

    def allow_frame(self) -> bool:
        """Spend one inbound-frame token; False when the client sends faster than allowed."""
        now = time.monotonic()
        if self.frames.take(now) == 0.0:
            return True
        self.refused.append(now)
        while self.refused and self.refused[0] < now - self.FLOOD_WINDOW:
            self.refused.popleft()
        return False

    @property
    def flooding(self) -> bool:
        return len(self.refused) >= self.FLOOD_LIMIT

    def abort(self, code: int, reason: str) -> None:
        """Close without waiting for queued frames (their memory is released at once)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.queue.clear()
        self.queued_bytes = 0
        self.wake.set()
        self.closing = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            # The peer does not read: the close frame is stuck behind what it never took.
            if self.transport is not None:
                self.transport.abort()
        except Exception:  # the peer may be gone already
            pass

    async def flush_and_close(self, code: int, reason: str, timeout: float = 2.0) -> None:
        """Write what is queued (bounded by ``timeout``), then close: graceful shutdown."""
        deadline = time.monotonic() + timeout
        while self.queue and not self.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.wake.set()
            await self._close(code, reason)
