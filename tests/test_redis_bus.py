"""The Redis bus on its own: a connection that redis-py re-establishes by itself inside a read (its
retry policy, no exception reaching us) still makes the gateway tell every device to sync."""

from __future__ import annotations

import asyncio

from xietong.server.bus import Envelope
from xietong.server.redis_bus import RedisBus

from cluster_support import RedisServer


async def test_a_quiet_reconnection_inside_a_read_still_asks_for_a_resync(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    bus = RedisBus(redis.url)
    received: list[Envelope] = []
    arrived = asyncio.Event()

    async def handler(envelope: Envelope) -> None:
        received.append(envelope)
        arrived.set()

    try:
        await bus.start(handler)
        await bus.subscribe(users=["usr_a"])
        await bus.publish(Envelope(kind="user", target="usr_a", frame=b"{}"))
        await asyncio.wait_for(arrived.wait(), 5)
        assert [e.kind for e in received] == ["user"]
        # Drop the listener's socket under it: redis-py reconnects and resubscribes inside its read.
        arrived.clear()
        await bus._pubsub.connection.disconnect()
        await asyncio.wait_for(arrived.wait(), 5)
        assert received[-1].kind == "resync" and bus.reconnects >= 1
        # And the subscription survived: live delivery goes on.
        arrived.clear()
        await bus.publish(Envelope(kind="user", target="usr_a", frame=b"{}"))
        await asyncio.wait_for(arrived.wait(), 5)
        assert received[-1].kind == "user"
    finally:
        await bus.close()
        redis.stop()
