"""Where device presence is kept: in this process (embedded default) or in Redis (several processes).

Both backends keep, per user, the state ("active" or "away") of each connection of the user's devices
— keyed by a per-connection key, so that two sockets of one device on two processes do not remove
each other — with an expiry that the connection's server process renews by heartbeat. A device whose process died is found by
``claim_expired`` (exactly one caller gets each expired device) and removed. ``swap_published_many``
records the last state announced for a user, so that several processes observing changes of one
user announce each real change once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

import redis.asyncio as redis

from ..redis_bus import RETRY

DeviceEntry = tuple[str, str, str]  # (user_id, connection key, state)


def aggregate(states: list[str]) -> str:
    """A user is online if any device is in the foreground, away if all are in the background."""
    if "active" in states:
        return "online"
    return "away" if states else "offline"


class PresenceBackend(Protocol):
    async def put_devices(self, entries: list[DeviceEntry], expires_at: float) -> None: ...

    async def remove_device(self, user_id: str, device_id: str) -> None: ...

    async def claim_expired(self, now: float, limit: int) -> list[tuple[str, str]]: ...

    async def states(self, user_ids: list[str]) -> dict[str, str]: ...

    async def swap_published_many(self, states: list[tuple[str, str]]) -> list[str]:
        """Record each (user, state) as announced; the users whose state differed from the last one."""
        ...

    async def close(self) -> None: ...


class MemoryPresenceBackend:
    def __init__(self) -> None:
        self.devices: dict[str, dict[str, str]] = defaultdict(dict)
        self.expiry: dict[tuple[str, str], float] = {}
        self.published: dict[str, str] = {}

    async def put_devices(self, entries: list[DeviceEntry], expires_at: float) -> None:
        for user_id, device_id, state in entries:
            self.devices[user_id][device_id] = state
            self.expiry[(user_id, device_id)] = expires_at

    async def remove_device(self, user_id: str, device_id: str) -> None:
        self.expiry.pop((user_id, device_id), None)
        devices = self.devices.get(user_id)
        if devices is not None:
            devices.pop(device_id, None)
            if not devices:
                del self.devices[user_id]

    async def claim_expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        gone = [key for key, at in self.expiry.items() if at <= now][:limit]
        for user_id, device_id in gone:
            await self.remove_device(user_id, device_id)
        return gone

    async def states(self, user_ids: list[str]) -> dict[str, str]:
        return {u: aggregate(list(self.devices.get(u, {}).values())) for u in user_ids}

    async def swap_published_many(self, states: list[tuple[str, str]]) -> list[str]:
        changed = []
        for user_id, state in states:
            if self.published.get(user_id, "offline") != state:
                self.published[user_id] = state
                changed.append(user_id)
        return changed

    async def close(self) -> None:
        return None


# Claim expired devices atomically: each is removed by exactly one sweeping process.
_CLAIM = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, member in ipairs(gone) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local sep = string.find(member, '|', 1, true)
    local user, device = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    redis.call('HDEL', 'xt:pd:' .. user, device)
    table.insert(claimed, member)
  end
end
return claimed
"""

_SWAP = """
local old = redis.call('GET', KEYS[1])
if not old then old = 'offline' end
if old == ARGV[1] then return 0 end
if ARGV[1] == 'offline' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

EXPIRY_SET = "xt:px"


class RedisPresenceBackend:
    """Keys: ``xt:pd:<user>`` hash device → state; ``xt:px`` sorted set "<user>|<device>" by expiry;
    ``xt:pp:<user>`` the last state announced."""

    def __init__(self, url: str):
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, decode_responses=True, **RETRY)
        self._claim = self.redis.register_script(_CLAIM)
        self._swap = self.redis.register_script(_SWAP)

    async def put_devices(self, entries: list[DeviceEntry], expires_at: float) -> None:
        if not entries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id, device_id, state in entries:
                pipe.hset(f"xt:pd:{user_id}", device_id, state)
            pipe.zadd(EXPIRY_SET, {f"{u}|{d}": expires_at for u, d, _ in entries})
            await pipe.execute()

    async def remove_device(self, user_id: str, device_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(EXPIRY_SET, f"{user_id}|{device_id}")
            pipe.hdel(f"xt:pd:{user_id}", device_id)
            await pipe.execute()

    async def claim_expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        claimed = await self._claim(keys=[EXPIRY_SET], args=[now, limit])
        return [tuple(member.split("|", 1)) for member in claimed]  # type: ignore[misc]

    async def states(self, user_ids: list[str]) -> dict[str, str]:
        if not user_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hvals(f"xt:pd:{user_id}")
            results = await pipe.execute()
        return {u: aggregate(list(states)) for u, states in zip(user_ids, results)}

    async def swap_published_many(self, states: list[tuple[str, str]]) -> list[str]:
        if not states:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id, state in states:
                await self._swap(keys=[f"xt:pp:{user_id}"], args=[state], client=pipe)
            results = await pipe.execute()
        return [user_id for (user_id, _), changed in zip(states, results) if changed]

    async def close(self) -> None:
        await self.redis.aclose()
