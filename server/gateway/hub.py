"""The hub: which local connections receive which frames.

It keeps, for this process only, the connections of each user and the conversations of each
connected user (loaded once when a user's first device connects, then kept current from the
``member.*`` events themselves). Delivery is a dictionary walk and a queue append per device — no
database read per delivered event. A removed member is dropped from the routing right after the
removal event is delivered to them, on every process that holds their connections, so nothing
after it reaches them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Awaitable, Callable

from ..bus import Bus, Envelope
from ..store import Store
from . import frames
from .connection import CLOSE_REPLACED, CLOSE_REVOKED, Connection

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, store: Store, bus: Bus):
        self.store = store
        self.bus = bus
        self.devices: dict[str, Connection] = {}  # device id -> its one connection
        self.user_connections: dict[str, set[Connection]] = defaultdict(set)
        self.user_conversations: dict[str, set[str]] = {}
        self.conversation_users: dict[str, set[str]] = defaultdict(set)
        # user -> the membership changes seen by each load of the user's conversations in progress (two
        # overlap when a device's new socket replaces one whose load has not finished)
        self.loading: dict[str, list[list[tuple[str, bool]]]] = {}
        self.presence_watchers: dict[str, set[Connection]] = defaultdict(set)  # watched user -> connections
        # Run after the bus lost envelopes (resync): presence rebuilds, missed sign-outs are applied.
        self.on_resync: list[Callable[[], Awaitable[None]]] = []

    @property
    def connection_count(self) -> int:
        return len(self.devices)

    async def register(self, conn: Connection) -> None:
        """Route to ``conn`` from now on; a previous connection of the same device is replaced."""
        old = self.devices.get(conn.device_id)
        if old is not None and old is not conn:
            old.abort(CLOSE_REPLACED, "replaced by a newer connection of this device")
            self._drop(old)
        self.devices[conn.device_id] = conn
        first = not self.user_connections[conn.user_id]
        self.user_connections[conn.user_id].add(conn)
        if not first:
            return
        # Membership changes that arrive while the user's conversations load are kept and applied
        # after: the load may have read the member documents before a join was written.
        changes: list[tuple[str, bool]] = []
        self.loading.setdefault(conn.user_id, []).append(changes)
        try:
            conversations = set(await self.store.conversations.active_conversation_ids(conn.user_id))
        finally:
            loads = [c for c in self.loading[conn.user_id] if c is not changes]
            if loads:
                self.loading[conn.user_id] = loads
            else:
                del self.loading[conn.user_id]
        if not self.user_connections.get(conn.user_id):  # disconnected while we were loading
            return
        for cid, joined in changes:
            if joined:
                conversations.add(cid)
            else:
                conversations.discard(cid)
        self.user_conversations[conn.user_id] = conversations
        for cid in conversations:
            self.conversation_users[cid].add(conn.user_id)
        await self.bus.subscribe(conversations=conversations, users=[conn.user_id])

    async def unregister(self, conn: Connection) -> None:
        if self.devices.get(conn.device_id) is conn:
            del self.devices[conn.device_id]
        await self.unwatch(conn, list(conn.watching))
        unused = self._drop(conn)
        if unused is not None:
            await self.bus.unsubscribe(conversations=unused, users=[conn.user_id])

    async def watch(self, conn: Connection, user_ids: list[str]) -> None:
        """Deliver presence changes of ``user_ids`` to ``conn`` (the caller checked it may see them)."""
        first = []
        for user_id in user_ids:
            if conn in self.presence_watchers[user_id]:
                continue
            if not self.presence_watchers[user_id]:
                first.append(user_id)
            self.presence_watchers[user_id].add(conn)
            conn.watching.add(user_id)
        if first:
            await self.bus.subscribe(presence=first)

    async def unwatch(self, conn: Connection, user_ids: list[str]) -> None:
        last = []
        for user_id in user_ids:
            watchers = self.presence_watchers.get(user_id)
            conn.watching.discard(user_id)
            if watchers is None or conn not in watchers:
                continue
            watchers.discard(conn)
            if not watchers:
                del self.presence_watchers[user_id]
                last.append(user_id)
        if last:
            await self.bus.unsubscribe(presence=last)

    def local_devices(self) -> list[tuple[str, str, str]]:
        """(user, presence key, presence state) of every connection here, for presence renewal."""
        return [(c.user_id, c.presence_key, c.presence_state) for c in self.devices.values()]

    def _drop(self, conn: Connection) -> set[str] | None:
        """Remove ``conn``; when it was the user's last, forget the user's routing and return the
        conversations no other local user needs."""
        connections = self.user_connections.get(conn.user_id)
        if connections is None:
            return None
        connections.discard(conn)
        if connections:
            return None
        del self.user_connections[conn.user_id]
        unused = set()
        for cid in self.user_conversations.pop(conn.user_id, set()):
            users = self.conversation_users.get(cid)
            if users is not None:
                users.discard(conn.user_id)
                if not users:
                    del self.conversation_users[cid]
                    unused.add(cid)
        return unused

    def is_member(self, user_id: str, conversation_id: str) -> bool:
        return conversation_id in self.user_conversations.get(user_id, ())

    async def handle(self, envelope: Envelope) -> None:
        """Deliver one bus envelope to the local connections it concerns."""
        if envelope.kind == "conversation":
            cid = envelope.target
            joined = set(envelope.members_added)
            # Joined users receive the join on their own channel (kind "user"), not here.
            for user_id in self.conversation_users.get(cid, ()):
                if user_id == envelope.exclude_user or user_id in joined:
                    continue
                for conn in self.user_connections.get(user_id, ()):
                    if conn.device_id != envelope.exclude_device:
                        conn.enqueue(envelope.frame)
            for user_id in joined:
                await self._route(user_id, cid)
            for user_id in envelope.members_removed:
                for changes in self.loading.get(user_id, ()):
                    changes.append((cid, False))
                conversations = self.user_conversations.get(user_id)
                if conversations is not None and cid in conversations:
                    conversations.discard(cid)
                    users = self.conversation_users.get(cid)
                    if users is not None:
                        users.discard(user_id)
                        if not users:
                            del self.conversation_users[cid]
                            await self.bus.unsubscribe(conversations=[cid])
        elif envelope.kind == "user":
            if envelope.conversation_id is not None:
                await self._route(envelope.target, envelope.conversation_id)
            for conn in self.user_connections.get(envelope.target, ()):
                if (envelope.device_id is None or conn.device_id == envelope.device_id) \
                        and conn.device_id != envelope.exclude_device:
                    conn.enqueue(envelope.frame)
        elif envelope.kind == "presence":
            for conn in self.presence_watchers.get(envelope.target, ()):
                conn.enqueue(envelope.frame)
        elif envelope.kind == "resync":
            # The bus lost envelopes during an outage. First repair what this process holds
            # (presence, sign-outs), then tell every device here to catch up by sync.
            for hook in self.on_resync:
                try:
                    await hook()
                except Exception as exc:  # the backing service may still be unsteady
                    log.warning("resync hook %s failed: %s", getattr(hook, "__name__", hook), exc)
            frame = frames.resync_frame()
            for conn in self.devices.values():
                conn.enqueue(frame)
        elif envelope.kind == "revoke":
            for conn in list(self.user_connections.get(envelope.target, ())):
                if envelope.device_id is None or conn.device_id == envelope.device_id:
                    conn.abort(CLOSE_REVOKED, "this device was signed out")

    async def _route(self, user_id: str, cid: str) -> None:
        """Start routing conversation ``cid`` to ``user_id``'s local devices (they joined it)."""
        for changes in self.loading.get(user_id, ()):
            changes.append((cid, True))
        conversations = self.user_conversations.get(user_id)
        if conversations is None or cid in conversations:
            return
        conversations.add(cid)
        first = not self.conversation_users.get(cid)
        self.conversation_users[cid].add(user_id)
        if first:
            await self.bus.subscribe(conversations=[cid])

    def all_connections(self) -> list[Connection]:
        return list(self.devices.values())
