"""The bus over Redis pub/sub: any number of server processes, each receiving only what its devices need.

Channels: ``xt:c:<conversation>`` (events and notices of a conversation), ``xt:u:<user>`` (a user's
devices: read state, revocation), ``xt:p:<user>`` (a user's presence). A process subscribes to the
channels of its connected users' conversations, of those users, and of the presence they watch —
so it never receives, let alone decodes, the traffic of the rest of the system. Envelopes are
msgpack-encoded once; the frame inside is already the JSON every device receives.

Pub/sub is at-most-once and never the record: a publish that fails (Redis down) is logged and
dropped, the write that published stands. The listener reconnects with back-off, subscribes again to
everything wanted, and hands the gateway a ``resync`` envelope, which tells every connected device
to sync — healing whatever was published during the outage.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

import msgspec
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .bus import Envelope, Handler

log = logging.getLogger(__name__)

# A pooled connection may be stale after Redis restarted: retry a command twice, briefly, before
# reporting the outage.
RETRY = {"retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
         "retry_on_error": [RedisConnectionError, RedisTimeoutError]}
CONTROL = "xt:ctl"  # always subscribed, so the listener holds a connection even with no devices
_PREFIX = {"conversation": "xt:c:", "user": "xt:u:", "revoke": "xt:u:", "presence": "xt:p:"}


def channel_of(envelope: Envelope) -> str:
    return _PREFIX[envelope.kind] + envelope.target


class RedisBus:
    def __init__(self, url: str):
        self.url = url
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_keepalive=True,
                                          health_check_interval=15, **RETRY)
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(Envelope).decode
        self._wanted: set[str] = {CONTROL}
        self._pubsub: redis.client.PubSub | None = None
        self._handler: Handler | None = None
        self._listener: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._publish_failures = 0

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="redis-bus-listener")
        await asyncio.wait_for(self.connected.wait(), 10)

    # ---- publishing ----------------------------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> None:
        await self.publish_many([envelope])

    async def publish_many(self, envelopes: list[Envelope]) -> None:
        if not envelopes:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for envelope in envelopes:
                    pipe.publish(channel_of(envelope), self._encode(envelope))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Never fail the write that published: the devices heal by sync after the outage.
            self._publish_failures += 1
            if self._publish_failures == 1 or self._publish_failures % 1000 == 0:
                log.warning("publishing to Redis failed (%d so far): %s", self._publish_failures, exc)

    # ---- subscriptions ---------------------------------------------------------------------------------

    @staticmethod
    def _channels(conversations: Iterable[str], users: Iterable[str], presence: Iterable[str]) -> set[str]:
        return ({"xt:c:" + c for c in conversations} | {"xt:u:" + u for u in users}
                | {"xt:p:" + p for p in presence})

    async def subscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = (),
                        presence: Iterable[str] = ()) -> None:
        new = self._channels(conversations, users, presence) - self._wanted
        if not new:
            return
        self._wanted |= new
        if self._pubsub is not None and self.connected.is_set():
            try:
                await self._pubsub.subscribe(*new)
            except (RedisError, OSError):
                pass  # the listener subscribes to everything wanted when it reconnects

    async def unsubscribe(self, conversations: Iterable[str] = (), users: Iterable[str] = (),
                          presence: Iterable[str] = ()) -> None:
        gone = self._channels(conversations, users, presence) & self._wanted
        if not gone:
            return
        self._wanted -= gone
        if self._pubsub is not None and self.connected.is_set():
            try:
                await self._pubsub.unsubscribe(*gone)
            except (RedisError, OSError):
                pass

    # ---- listening ----------------------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.05
        first = True
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._wanted)
                # redis-py may also reconnect by itself inside a read (its retry policy) and subscribe
                # again without raising: envelopes of the gap are lost all the same, so every
                # (re)connection of this pubsub connection after the first one triggers a resync too.
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(self._reconnected_quietly)
                self._pubsub = pubsub
                self.connected.set()
                delay = 0.05
                if not first:
                    self.reconnects += 1
                    log.warning("Redis bus reconnected; telling connected devices to sync")
                    await self._deliver(Envelope(kind="resync", target="*"))
                first = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        envelope = self._decode(message["data"])
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("ignoring an undecodable envelope on %s", message.get("channel"))
                        continue
                    await self._deliver(envelope)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("Redis bus connection lost: %s", exc)
                self.connected.clear()
                self._pubsub = None
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _reconnected_quietly(self, connection: Any) -> None:
        self.reconnects += 1
        log.warning("Redis bus reconnected within a read; telling connected devices to sync")
        asyncio.get_running_loop().create_task(self._deliver(Envelope(kind="resync", target="*")))

    async def _deliver(self, envelope: Envelope) -> None:
        if self._handler is None:
            return
        try:
            await self._handler(envelope)
        except Exception:
            log.exception("delivering a bus envelope failed")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
        self._handler = None
        await self.redis.aclose()
