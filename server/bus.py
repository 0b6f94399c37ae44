"""The bus: how a change reaches the gateways that hold the connections that need it.

The bus is a fast path, never the record: an envelope lost on the way is healed by the client's
sync (seq gaps). Frames travel pre-encoded, so an event is serialised once however many devices and
processes receive it.

* :class:`InProcessBus` — the embedded default: one server process, delivery by direct call.
* :class:`~xietong.server.redis_bus.RedisBus` — the same interface over Redis pub/sub for any number
  of processes.

Routing: a gateway subscribes to the conversations, users and presence of its connected devices; a
process receives only envelopes for those (the Redis bus maps each to a channel), never the whole
stream. When a bus comes back after an outage it hands the gateway a ``resync`` envelope: envelopes
published meanwhile are lost, so every connected device is told to sync.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, Iterable, Literal, Protocol

import msgspec

log = logging.getLogger(__name__)


class Envelope(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message on the bus.

    ``kind="conversation"``: ``frame`` goes to every connected device of the conversation's members;
    ``members_added``/``members_removed`` update the gateways' routing *before* (added) or *after*
    (removed) delivery, so a removed member receives the removal and nothing after it.
    ``kind="user"``: ``frame`` goes to the user's connected devices (all, or ``device_id`` only;
    never ``exclude_device``). With ``conversation_id``, it tells the user's gateways that the user
    joined that conversation: they start routing it (a process that had no member of a new
    conversation is not subscribed to its channel, so joins travel on the joined users' channels).
    ``kind="revoke"``: close ``device_id`` of ``target`` (the device was signed out).
    ``kind="presence"``: ``frame`` goes to the devices subscribed to ``target``'s presence.
    ``kind="resync"``: local only — the bus lost envelopes; every device should sync.
    """

    kind: Literal["conversation", "user", "revoke", "presence", "resync"]
    target: str
    frame: bytes = b""
    members_added: list[str] = []
    members_removed: list[str] = []
    device_id: str | None = None
    exclude_device: str | None = None  # conversation frames: not to this device ...
    exclude_user: str | None = None  # ... nor to any device of this user
    conversation_id: str | None = None  # user frames: the conversation the user just joined


Handler = Callable[[Envelope], Awaitable[None]]


class Bus(Protocol):
    async def start(self, handler: Handler) -> None: ...

    async def publish(self, envelope: Envelope) -> None: ...

    async def publish_many(self, envelopes: list[Envelope]) -> None: ...

    async def subscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = (),
                        presence: Iterable[str] = ()) -> None: ...

    async def unsubscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = (),
                          presence: Iterable[str] = ()) -> None: ...

    async def close(self) -> None: ...


class InProcessBus:
    """Single-process bus: a publish is a call to this process's gateway."""

    def __init__(self) -> None:
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def publish(self, envelope: Envelope) -> None:
        if self._handler is not None:
            try:
                await self._handler(envelope)
            except Exception:  # delivery problems must never fail the write that published
                log.exception("delivering a bus envelope failed")

    async def publish_many(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            await self.publish(envelope)

    async def subscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = (),
                        presence: Iterable[str] = ()) -> None:
        return None

    async def unsubscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = (),
                          presence: Iterable[str] = ()) -> None:
        return None

    async def close(self) -> None:
        self._handler = None
