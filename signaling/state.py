"""Live call and meeting state, and the channels between signaling processes.

Two implementations of one interface:

* :class:`MemoryState` — the embedded default: one process, a dict, one lock.
* :class:`RedisState` — any number of signaling processes: each document is a JSON value under
  ``xt:sig:<key>``, changed with optimistic transactions (``WATCH`` / ``MULTI``: a change that raced
  another is recomputed from the new value), and frames travel on Redis pub/sub channels.

Documents are plain dicts. :meth:`State.update` reads the documents of the given keys, hands copies
to a pure function that changes them in place (``None`` removes a document; raising an ``XtError``
aborts), and writes them back atomically. The function may run more than once under contention,
so it must not have side effects: what to tell whom is decided from its result, after it returns.

Channels: ``device:<device id>`` (frames for one connected device: relayed SDP and candidates,
meeting events) and ``user:<user id>`` (frames for every connected device of a user: ringing). A
process subscribes to the channels of the devices and users it holds connections for.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import Any, Awaitable, Callable, Iterable, Protocol

log = logging.getLogger(__name__)

Docs = dict[str, dict[str, Any] | None]
Change = Callable[[Docs], Any]
Handler = Callable[[str, bytes], Awaitable[None]]
DOC_TTL_SECONDS = 24 * 3600  # a document nobody changes for a day is gone (an abandoned meeting)


class State(Protocol):
    async def start(self, handler: Handler) -> None: ...

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def update(self, keys: list[str], change: Change) -> tuple[Docs, Any]: ...

    async def publish(self, channel: str, frame: bytes) -> None: ...

    async def subscribe(self, channels: Iterable[str]) -> None: ...

    async def unsubscribe(self, channels: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


class _Channels:
    """How many of this process's sockets want each channel: subscribe on the first, drop on the last."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, channels: Iterable[str]) -> list[str]:
        """The channels that became wanted."""
        new = []
        for c in channels:
            self.counts[c] = self.counts.get(c, 0) + 1
            if self.counts[c] == 1:
                new.append(c)
        return new

    def remove(self, channels: Iterable[str]) -> list[str]:
        """The channels nobody wants any more."""
        gone = []
        for c in channels:
            n = self.counts.get(c, 0) - 1
            if n > 0:
                self.counts[c] = n
            else:
                self.counts.pop(c, None)
                gone.append(c)
        return gone

    def __contains__(self, channel: str) -> bool:
        return channel in self.counts

    def __iter__(self) -> Any:
        return iter(self.counts)

    def __bool__(self) -> bool:
        return bool(self.counts)


class MemoryState:
    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._handler: Handler | None = None
        self._channels = _Channels()

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def get(self, key: str) -> dict[str, Any] | None:
        doc = self._docs.get(key)
        return copy.deepcopy(doc) if doc is not None else None

    async def update(self, keys: list[str], change: Change) -> tuple[Docs, Any]:
        async with self._lock:
            docs: Docs = {k: copy.deepcopy(self._docs.get(k)) for k in keys}
            result = change(docs)
            for k, v in docs.items():
                if v is None:
                    self._docs.pop(k, None)
                else:
                    self._docs[k] = v
            return copy.deepcopy(docs), result

    async def publish(self, channel: str, frame: bytes) -> None:
        if self._handler is not None and channel in self._channels:
            try:
                await self._handler(channel, frame)
            except Exception:  # a delivery problem never fails the change that published
                log.exception("delivering a signaling frame failed")

    async def subscribe(self, channels: Iterable[str]) -> None:
        self._channels.add(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        self._channels.remove(channels)

    async def close(self) -> None:
        self._handler = None


class RedisState:
    PREFIX = "xt:sig:"

    def __init__(self, url: str):
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._pubsub = self._redis.pubsub()
        self._handler: Handler | None = None
        self._channels = _Channels()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="signaling-pubsub")

    async def _listen(self) -> None:
        """Receive frames; after a Redis outage, subscribe again to every channel still wanted."""
        from redis.exceptions import ConnectionError as RedisConnectionError

        while True:
            try:
                if self._channels:
                    await self._pubsub.subscribe(*(self.PREFIX + c for c in self._channels))
                self._connected.set()
                while True:
                    if not self._pubsub.subscribed:
                        await asyncio.sleep(0.05)
                        continue
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message" or self._handler is None:
                        continue
                    channel = message["channel"].decode()[len(self.PREFIX):]
                    try:
                        await self._handler(channel, message["data"])
                    except Exception:
                        log.exception("delivering a signaling frame failed")
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, OSError):
                self._connected.clear()
                log.warning("signaling lost Redis; resubscribing")
                await asyncio.sleep(0.5)
                try:
                    await self._pubsub.reset()
                except Exception:  # pragma: no cover - best effort
                    pass
                self._pubsub = self._redis.pubsub()

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self.PREFIX + key)
        return json.loads(raw) if raw else None

    async def update(self, keys: list[str], change: Change) -> tuple[Docs, Any]:
        from redis.exceptions import WatchError

        names = [self.PREFIX + k for k in keys]
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*names)
                    raws = [await pipe.get(n) for n in names]
                    docs: Docs = {k: (json.loads(r) if r else None) for k, r in zip(keys, raws)}
                    result = change(docs)
                    pipe.multi()
                    for k, n in zip(keys, names):
                        if docs[k] is None:
                            pipe.delete(n)
                        else:
                            pipe.set(n, json.dumps(docs[k], separators=(",", ":")), ex=DOC_TTL_SECONDS)
                    await pipe.execute()
                    return docs, result
                except WatchError:
                    continue
                finally:
                    await pipe.reset()

    async def publish(self, channel: str, frame: bytes) -> None:
        await self._redis.publish(self.PREFIX + channel, frame)

    async def subscribe(self, channels: Iterable[str]) -> None:
        new = [self.PREFIX + c for c in self._channels.add(channels)]
        if new:
            await self._pubsub.subscribe(*new)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        gone = [self.PREFIX + c for c in self._channels.remove(channels)]
        if gone:
            try:
                await self._pubsub.unsubscribe(*gone)
            except Exception:  # pragma: no cover - the connection is gone; resubscription skips these
                pass

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self._pubsub.aclose()
        except Exception:  # pragma: no cover
            pass
        await self._redis.aclose()
