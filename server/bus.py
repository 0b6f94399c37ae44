"""The bus: how a change reaches the gateways that hold the connections that need it.

The bus is a fast path, never the record: an envelope lost on the way is healed by the client's
sync (seq gaps). Frames travel pre-encoded, so an event is serialised once however many devices and
processes receive it.

* :class:`InProcessBus` — the embedded default: one server process, delivery by direct call.
* A Redis bus with the same interface serves several processes (the scale-out part).

Routing: a gateway subscribes to the conversations and users of its connected devices; a process
receives only envelopes for those (the Redis bus maps them to channels), never the whole stream.
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
    never ``exclude_device``).
    ``kind="revoke"``: close ``device_id`` of ``target`` (the device was signed out).
    """

    kind: Literal["conversation", "user", "revoke"]
    target: str
    frame: bytes = b""
    members_added: list[str] = []
    members_removed: list[str] = []
    device_id: str | None = None
    exclude_device: str | None = None  # conversation frames: not to this device ...
    exclude_user: str | None = None  # ... nor to any device of this user


Handler = Callable[[Envelope], Awaitable[None]]


class Bus(Protocol):
    async def start(self, handler: Handler) -> None: ...

    async def publish(self, envelope: Envelope) -> None: ...

    async def subscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = ()) -> None: ...

    async def unsubscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = ()) -> None: ...

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

    async def subscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        return None

    async def unsubscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        return None

    async def close(self) -> None:
        self._handler = None
