"""Presence of users, from the connections of their devices.

* A device is **active** (app in the foreground, the default on connect) or **away** (in the
  background: the client says so with a ``presence`` frame). A user is **online** if any device is
  active, **away** if all connected devices are away, **offline** with none — so a phone going to the
  background while the PC stays connected still shows online.
* Each server process renews its devices every ``ttl / 3`` seconds. A process that dies without a
  clean disconnect stops renewing: its devices expire after at most ``ttl`` seconds, the next sweep
  (every ``ttl / 3``, at most 5 s) removes them, and after the debounce the change is announced.
  Bound: offline within ``ttl + sweep interval + debounce`` seconds (45 + 5 + 2 by default).
* Changes are **debounced**: a change is announced ``debounce`` seconds after it happened, as the
  state at that moment, and only if it differs from the last state announced — a phone flapping
  between networks within the window announces nothing.
* Changes go only to **watchers**: devices that asked (``presence_watch``) for users they are
  allowed to see (the directory's visibility, or a shared conversation). **Last seen** is stored when
  a user goes offline and shown unless the user hides it.

Cost of one change: about five Redis commands (device hash, expiry set, aggregate, announce swap,
publish), one delivery per process that has watchers of that user, a queue append per watching
device, and one database write when a user goes offline (last seen); online and away touch no
database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from ..access import Principal
from ..bus import Bus, Envelope
from ..directory.service import DirectoryService
from ..gateway import frames
from ..models import utcnow
from ..store import Store
from .backend import DeviceEntry, PresenceBackend

log = logging.getLogger(__name__)

MAX_QUERY = 500
CLAIM_BATCH = 500
ANNOUNCE_BATCH = 1000


@dataclass(frozen=True)
class UserPresence:
    user_id: str
    state: str  # online | away | offline
    last_seen: datetime | None  # None while online, or when the user hides it


class PresenceService:
    def __init__(self, store: Store, backend: PresenceBackend, bus: Bus, directory: DirectoryService, *,
                 ttl: float, debounce: float, clock: Callable[[], float] = time.time):
        self.store = store
        self.backend = backend
        self.bus = bus
        self.directory = directory
        self.ttl = ttl
        self.debounce = debounce
        self.clock = clock
        self.local_devices: Callable[[], list[DeviceEntry]] = lambda: []  # set by the gateway
        self._due: dict[str, float] = {}  # user -> when their change is announced (debounce)
        self._wake = asyncio.Event()
        self._busy = False  # a batch of announcements is being made
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def renew_interval(self) -> float:
        return self.ttl / 3

    @property
    def sweep_interval(self) -> float:
        return min(5.0, self.ttl / 3)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._every(self.renew_interval, self.renew), name="presence-renew"),
                       loop.create_task(self._every(self.sweep_interval, self.sweep), name="presence-sweep"),
                       loop.create_task(self._announce_forever(), name="presence-announce")]

    @property
    def idle(self) -> bool:
        """Nothing waits to be announced (tests wait for this instead of sleeping)."""
        return not self._due and not self._busy

    async def stop(self) -> None:
        """Stop renewing; let the announcements still in their debounce window happen (devices
        leaving a stopping process usually reconnect elsewhere meanwhile, and then nothing is
        announced at all), then release the backend."""
        for task in self._tasks[:2]:
            task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.debounce + 1.0
        while not self.idle and self._tasks and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.backend.close()

    async def _every(self, seconds: float, job: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()  # type: ignore[misc]
            except Exception as exc:  # Redis down: try again next round
                log.warning("presence %s failed: %s", getattr(job, "__name__", job), exc)

    # ---- device events ------------------------------------------------------------------------------

    async def device_connected(self, user_id: str, device_id: str, state: str = "active") -> None:
        await self.backend.put_devices([(user_id, device_id, state)], self.clock() + self.ttl)
        self._changed(user_id)

    async def device_state(self, user_id: str, device_id: str, state: str) -> None:
        await self.device_connected(user_id, device_id, state)

    async def device_disconnected(self, user_id: str, device_id: str) -> None:
        await self.backend.remove_device(user_id, device_id)
        self._changed(user_id)

    async def renew(self) -> None:
        """Heartbeat: push the expiry of every device connected to this process."""
        await self.backend.put_devices(self.local_devices(), self.clock() + self.ttl)

    async def rebuild(self) -> None:
        """After Redis came back (empty): register this process's connections at once, and announce
        their users again (the state watchers saw before the outage may be stale)."""
        entries = self.local_devices()
        await self.backend.put_devices(entries, self.clock() + self.ttl)
        for user_id, _, _ in entries:
            self._changed(user_id)

    async def sweep(self) -> None:
        """Remove devices whose process stopped renewing them (it died), and announce."""
        for user_id, _ in await self.backend.claim_expired(self.clock(), CLAIM_BATCH):
            self._changed(user_id)

    # ---- announcing -----------------------------------------------------------------------------

    def _changed(self, user_id: str) -> None:
        if user_id not in self._due:  # else already due: it announces the state as of then
            self._due[user_id] = time.monotonic() + self.debounce
            self._wake.set()

    async def _announce_forever(self) -> None:
        """Announce due changes in batches: a burst of disconnections (a server restarting under
        thousands of devices) costs a few pipelined round trips, not thousands of calls."""
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = min(self._due.values()) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.5))
                continue
            now = time.monotonic()
            batch = [u for u, at in self._due.items() if at <= now][:ANNOUNCE_BATCH]
            for user_id in batch:
                del self._due[user_id]
            self._busy = True
            try:
                await self._announce(batch)
            except Exception as exc:  # Redis or the database down: these changes go unannounced
                log.warning("announcing presence of %d users failed: %s", len(batch), exc)
            finally:
                self._busy = False

    async def _announce(self, user_ids: list[str]) -> None:
        states = await self.backend.states(user_ids)
        changed = await self.backend.swap_published_many([(u, states[u]) for u in user_ids])
        if not changed:
            return
        offline = [u for u in changed if states[u] == "offline"]  # online and away need no database
        now = utcnow()
        hidden: set[str] = set()
        if offline:
            await self.store.users.set_last_seen_many(offline, now)
            users = await self.store.users.get_many(offline)
            hidden = {u for u in offline if u not in users or users[u].hide_last_seen}
        await self.bus.publish_many([
            Envelope(kind="presence", target=u, frame=frames.presence_frame(
                u, states[u], now if states[u] == "offline" and u not in hidden else None))
            for u in changed])

    async def set_hide_last_seen(self, me: Principal, hide: bool) -> None:
        await self.store.users.update(me.user_id, {"hide_last_seen": hide}, utcnow())

    # ---- reading --------------------------------------------------------------------------------

    async def allowed(self, me: Principal, user_ids: list[str]) -> list[str]:
        """Those of ``user_ids`` whose presence the caller may see (in the order given)."""
        visible = await self.directory.visible_among(me, user_ids)
        return [u for u in dict.fromkeys(user_ids) if u in visible]

    async def query(self, me: Principal, user_ids: list[str]) -> list[UserPresence]:
        """Presence of the users the caller may see (others are left out, as if unknown)."""
        allowed = await self.allowed(me, user_ids[:MAX_QUERY])
        states = await self.backend.states(allowed)
        offline = [u for u in allowed if states.get(u, "offline") == "offline"]
        users = await self.store.users.get_many(offline)
        seen = await self.store.users.last_seen_of([u for u in offline if u in users and not users[u].hide_last_seen])
        return [UserPresence(u, states.get(u, "offline"), seen.get(u)) for u in allowed]
