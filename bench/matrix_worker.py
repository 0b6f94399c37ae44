"""A load-generator process for a Matrix homeserver (Synapse), through its client-server API.

Run by the orchestrator as ``python -m bench.matrix_worker SPEC.json``, with the same protocol as
``bench/worker.py`` (``READY``, ``GO``, ``COUNT n``, ``STOP``, ``RESULT <json>``) and its CPU time reported.

Roles:
- ``matrix_send``: each sender sends into its room at ``rate_per_sender`` messages/s for ``duration``
  seconds, open loop (on schedule, each request on its own, not waiting for the previous answer):
  ``PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txnId}`` — the txnId makes a retry
  idempotent, as Xietong's client_msg_id does. The body carries the send time; records send→200 latency.
- ``matrix_sync``: each user long-polls ``/sync`` (its ``since`` token, a stored filter keeping room
  timeline messages only) and counts the messages of others (or, for a group, every message) with
  the send→arrival latency.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from urllib.parse import quote

import aiohttp
import msgspec

from xietong.server.runtime import run_async

from .worker import Worker, cpu_seconds

decode = msgspec.json.decode
encode = msgspec.json.encode

# Only message events in room timelines: no presence, account data, receipts, typing or state. The limit is
# above any backlog of these workloads, so no sync skips messages (``limited``; counted all the same).
SYNC_FILTER = {"presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]},
               "room": {"timeline": {"limit": 1000, "types": ["m.room.message"]}, "state": {"not_types": ["*"]},
                        "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}}


class MatrixWorker(Worker):
    def _count_error(self, kind: str) -> None:
        self.result["errors"] += 1
        codes = self.result.setdefault("error_codes", {})
        codes[kind] = codes.get(kind, 0) + 1

    async def role_matrix_send(self) -> None:
        spec = self.spec
        assert self.session is not None
        session = self.session
        senders = spec["senders"]  # [[access token, room id], ...]
        rate, duration, tag = spec["rate_per_sender"], spec["duration"], spec["tag"]
        acks: list[float] = []
        loop = asyncio.get_running_loop()
        inflight: set[asyncio.Task] = set()

        async def put(url: str, headers: dict[str, str], sent_at: float, text: str) -> None:
            try:
                async with session.put(url, data=encode({"msgtype": "m.text", "body": text}), headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        acks.append(time.time() - sent_at)
                    else:
                        self._count_error(f"HTTP {r.status}")
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                self._count_error(type(e).__name__)

        async def whoami(token: str) -> None:  # checks the token, opens the connections (as a signed-in client)
            async with session.get(f"{self.url}/_matrix/client/v3/account/whoami",
                                   headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200, await r.text()

        await asyncio.gather(*(whoami(token) for token, _ in senders))
        self.result["connected"] = len(senders)
        await self.ready_and_go()
        cpu0 = cpu_seconds()
        start = loop.time()
        sent = 0

        async def send_loop(index: int, token: str, room: str) -> None:
            nonlocal sent
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            base = f"{self.url}/_matrix/client/v3/rooms/{quote(room, safe='')}/send/m.room.message/"
            interval = 1.0 / rate
            next_at = start + random.random() * interval
            n = 0
            while next_at < start + duration:
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                key = f"{tag}-{index}-{n}"
                task = asyncio.create_task(put(base + key, headers, now, f"{now:.6f} {key} 基准测试消息"))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                sent += 1
                n += 1
                next_at += interval

        await asyncio.gather(*(send_loop(i, token, room) for i, (token, room) in enumerate(senders)))
        if inflight:  # the outstanding answers (bounded)
            await asyncio.wait(set(inflight), timeout=spec.get("drain", 15))
        unacked = len(inflight)
        elapsed = loop.time() - start
        for task in list(inflight):
            task.cancel()
        self.result.update(sent=sent, acked=len(acks), ack_latencies=acks, unacked=unacked, elapsed=elapsed,
                           cpu_seconds=cpu_seconds() - cpu0)

    async def role_matrix_sync(self) -> None:
        spec = self.spec
        assert self.session is not None
        session = self.session
        users = spec["users"]  # [[user id, access token], ...]
        count_own, track = spec.get("count_own", False), spec.get("track_arrivals", False)
        timeout_ms = spec.get("timeout_ms", 5000)
        latencies: list[float] = []
        arrivals: dict[str, list[float]] = {}  # message key -> [send time, arrival times...]
        stats = {"own": 0, "limited": 0}
        sync_url = f"{self.url}/_matrix/client/v3/sync"
        request_timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000 + 120)

        async def prepare(user_id: str, token: str) -> tuple[dict[str, str], str, str]:
            """Store the filter and take the initial sync's position (before the clock starts)."""
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(f"{self.url}/_matrix/client/v3/user/{quote(user_id, safe='')}/filter",
                                    data=encode(SYNC_FILTER), headers=headers) as r:
                filter_id = (await r.json())["filter_id"]
            async with session.get(sync_url, params={"filter": filter_id, "timeout": "0"}, headers=headers) as r:
                since = (await r.json())["next_batch"]
            return headers, filter_id, since

        gate = asyncio.Semaphore(32)

        async def gated(user_id: str, token: str) -> tuple[dict[str, str], str, str]:
            async with gate:
                return await prepare(user_id, token)

        prepared = await asyncio.gather(*(gated(u, t) for u, t in users))
        self.result["connected"] = len(prepared)

        async def poll(user_id: str, headers: dict[str, str], filter_id: str, since: str) -> None:
            while True:
                try:
                    async with session.get(sync_url, headers=headers, timeout=request_timeout,
                                           params={"filter": filter_id, "since": since,
                                                   "timeout": str(timeout_ms)}) as r:
                        raw = await r.read()
                        now = time.time()
                        if r.status != 200:
                            self._count_error(f"HTTP {r.status}")
                            await asyncio.sleep(0.2)
                            continue
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                    self._count_error(type(e).__name__)
                    await asyncio.sleep(0.2)
                    continue
                body = decode(raw)
                since = body["next_batch"]
                for room in body.get("rooms", {}).get("join", {}).values():
                    timeline = room.get("timeline", {})
                    stats["limited"] += bool(timeline.get("limited"))
                    for event in timeline.get("events", ()):
                        if event.get("type") != "m.room.message":
                            continue
                        if event["sender"] == user_id and not count_own:
                            stats["own"] += 1
                            continue
                        sent_at, key = event["content"]["body"].split(" ", 2)[:2]
                        latencies.append(now - float(sent_at))
                        if track:
                            arrivals.setdefault(key, [float(sent_at)]).append(now)

        # Online before the start, as a connected socket is: each user's long-poll is already waiting.
        pollers = [asyncio.create_task(poll(u, *p)) for (u, _), p in zip(users, prepared)]
        await self.ready_and_go()
        cpu0 = cpu_seconds()
        await self.report_progress(lambda: len(latencies))
        for task in pollers:
            task.cancel()
        self.result.update(received=len(latencies), latencies=latencies, own_echoes=stats["own"],
                           limited_timelines=stats["limited"], cpu_seconds=cpu_seconds() - cpu0)
        if track:  # per message: [sent at, first arrival, last arrival, arrivals], as the fan-out scenario
            self.result["arrivals"] = {k: [v[0], min(v[1:]), max(v[1:]), len(v) - 1] for k, v in arrivals.items()}


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # open loop: many requests in flight
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = msgspec.json.decode(open(sys.argv[1], "rb").read())
    run_async(MatrixWorker(spec).run())


if __name__ == "__main__":
    main()
