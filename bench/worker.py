"""A load-generator process: many WebSocket clients in one event loop.

Run by the orchestrator as ``python -m bench.worker SPEC.json``. It connects its sockets, prints
``READY``, waits for ``GO`` on stdin, plays its role, and prints ``RESULT <json>``. Open-ended roles
(receivers, idle sockets) run until ``STOP`` arrives on stdin. Its own CPU time is reported so the
harness can show that the generator is not the bottleneck.

Roles:
- ``idle``: hold authenticated sockets (the server's heartbeat pings are answered by the client).
- ``send``: each socket sends to its conversation at ``rate`` messages/s for ``duration`` seconds,
  open loop (on schedule, not waiting for acks); records send→ack latency.
- ``receive``: counts message events; latency send→receive from the send time carried in the text.
- ``storm``: hold sockets, and when the server goes away reconnect (jittered back-off) and sync;
  reports when each socket was back and caught up.
- ``baseline``: receive frames from the bare broadcast server.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
from typing import Any

import aiohttp
import msgspec

from xietong.server.runtime import run_async

decode = msgspec.json.decode
encode = msgspec.json.encode


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker:
    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.url = spec["url"]
        self.session: aiohttp.ClientSession | None = None
        self.result: dict[str, Any] = {"errors": 0, "connected": 0}
        self.stop = asyncio.Event()
        self.go = asyncio.Event()

    async def connect(self, token: str | None) -> aiohttp.ClientWebSocketResponse:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ws = await self.session.ws_connect(self.url, headers=headers, heartbeat=None, autoping=True,
                                           max_msg_size=16 * 1024 * 1024, compress=0)
        if token:
            hello = decode((await ws.receive()).data)
            assert hello["type"] == "hello", hello
        return ws

    async def connect_all(self, tokens: list[str | None], concurrency: int = 200) -> list[aiohttp.ClientWebSocketResponse]:
        gate = asyncio.Semaphore(concurrency)

        async def one(token: str | None) -> aiohttp.ClientWebSocketResponse:
            async with gate:
                for attempt in range(20):
                    try:
                        return await self.connect(token)
                    except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                        await asyncio.sleep(0.05 * (attempt + 1))
                raise RuntimeError("could not connect")

        sockets = await asyncio.gather(*(one(t) for t in tokens))
        self.result["connected"] = len(sockets)
        return sockets

    # ---- roles ------------------------------------------------------------------------------

    async def role_idle(self) -> None:
        sockets = await self.connect_all(self.spec["tokens"])
        readers = [asyncio.create_task(self._drain(ws)) for ws in sockets]
        await self.ready_and_go()
        cpu0 = cpu_seconds()
        await self.stop.wait()
        self.result["cpu_seconds"] = cpu_seconds() - cpu0
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    async def _drain(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass

    async def role_send(self) -> None:
        spec = self.spec
        sockets = await self.connect_all(spec["tokens"])
        conversations = spec["conversations"]
        rate, duration = spec["rate_per_socket"], spec["duration"]
        pending: dict[str, float] = {}
        acks: list[float] = []
        loop = asyncio.get_running_loop()

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                frame = decode(msg.data)
                if frame.get("type") == "result" and "event" in frame.get("result", {}):
                    sent = pending.pop(frame["id"], None)
                    if sent is not None:
                        acks.append(time.time() - sent)
                elif frame.get("type") == "error":
                    self.result["errors"] += 1
                    self.result.setdefault("error_codes", {}).setdefault(frame["error"]["code"], 0)
                    self.result["error_codes"][frame["error"]["code"]] += 1
                    pending.pop(frame.get("id") or "", None)

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        await self.ready_and_go()
        cpu0 = cpu_seconds()
        start = loop.time()
        sent = 0

        async def send_loop(index: int, ws: aiohttp.ClientWebSocketResponse, cid: str) -> None:
            nonlocal sent
            interval = 1.0 / rate
            next_at = start + random.random() * interval
            n = 0
            while next_at < start + duration:
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.time()
                rid = f"{index}-{n}"
                pending[rid] = now
                await ws.send_str(json.dumps({"type": "send", "id": rid, "conversation_id": cid,
                                              "client_msg_id": f"b{spec['tag']}-{index}-{n}",
                                              "message": {"kind": "text", "text": f"{now:.6f} 基准测试消息"}}))
                sent += 1
                n += 1
                next_at += interval

        await asyncio.gather(*(send_loop(i, ws, cid) for i, (ws, cid) in enumerate(zip(sockets, conversations))))
        # Wait for the outstanding acks (bounded).
        deadline = loop.time() + spec.get("drain", 10)
        while pending and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.result.update(sent=sent, acked=len(acks), ack_latencies=acks, unacked=len(pending),
                           elapsed=loop.time() - start, cpu_seconds=cpu_seconds() - cpu0)
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    async def role_receive(self) -> None:
        sockets = await self.connect_all(self.spec["tokens"])
        latencies: list[float] = []
        arrivals: dict[str, list[float]] = {}  # message key -> arrival times (fan-out)
        track = self.spec.get("track_arrivals", False)

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                data = msg.data
                if b'"type":"event"' not in (data if isinstance(data, bytes) else data.encode()):
                    continue
                event = decode(data)["event"]
                if event["type"] != "message":
                    continue
                now = time.time()
                sent_at = float(event["message"]["text"].split(" ", 1)[0])
                latencies.append(now - sent_at)
                if track:
                    arrivals.setdefault(event["client_msg_id"], [sent_at]).append(now)

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        await self.ready_and_go()
        cpu0 = cpu_seconds()
        await self.report_progress(lambda: len(latencies))
        self.result.update(received=len(latencies), latencies=latencies, cpu_seconds=cpu_seconds() - cpu0)
        if track:  # per message: [sent at, first arrival, last arrival, arrivals]
            self.result["arrivals"] = {k: [v[0], min(v[1:]), max(v[1:]), len(v) - 1] for k, v in arrivals.items()}
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    async def role_baseline(self) -> None:
        sockets = await self.connect_all([None] * self.spec["count"])
        arrivals: dict[str, list[float]] = {}

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                frame = decode(msg.data)
                arrivals.setdefault(frame["k"], [frame["t"]]).append(time.time())

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        await self.ready_and_go()
        cpu0 = cpu_seconds()
        await self.report_progress(lambda: sum(len(v) for v in arrivals.values()))
        self.result.update(arrivals={k: [v[0], min(v[1:]), max(v[1:]), len(v) - 1] for k, v in arrivals.items()},
                           cpu_seconds=cpu_seconds() - cpu0)
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    async def role_storm(self) -> None:
        """Sockets that reconnect and sync after the server restarts."""
        tokens = self.spec["tokens"]
        conversations = self.spec["conversations"]
        have: list[int] = [0] * len(tokens)
        back_at: list[float | None] = [None] * len(tokens)
        lost_at: list[float | None] = [None] * len(tokens)

        async def track(ws: aiohttp.ClientWebSocketResponse, i: int) -> None:
            async for msg in ws:
                frame = decode(msg.data)
                if frame.get("type") == "event" and frame["event"]["conversation_id"] == conversations[i]:
                    have[i] = max(have[i], frame["event"]["seq"])

        async def sync(ws: aiohttp.ClientWebSocketResponse, i: int) -> None:
            while True:
                await ws.send_str(json.dumps({"type": "sync", "id": "s", "since": {conversations[i]: have[i]},
                                              "limit": 500}))
                while True:
                    frame = decode((await ws.receive()).data)
                    if frame.get("id") == "s":
                        break
                result = frame["result"]
                events = result["events"].get(conversations[i], [])
                if events:
                    have[i] = max(have[i], events[-1]["seq"])
                have[i] = max(have[i], result["through"].get(conversations[i], have[i]))
                if not result["has_more"].get(conversations[i]):
                    return

        async def device(i: int) -> None:
            ws = await self.connect(tokens[i])
            await sync(ws, i)
            ready_count[0] += 1
            if ready_count[0] == len(tokens):
                all_ready.set()
            while not self.stop.is_set():
                await track(ws, i)  # returns when the server closes the socket
                if self.stop.is_set():
                    return
                lost_at[i] = time.time()
                delay = 0.05
                while True:
                    await asyncio.sleep(random.random() * delay)  # jitter: no thundering herd
                    try:
                        ws = await self.connect(tokens[i])
                        await sync(ws, i)
                        back_at[i] = time.time()
                        if all(t is not None for t in back_at):
                            print("BACK", flush=True)
                        break
                    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, AssertionError, TypeError):
                        delay = min(delay * 2, 2.0)

        ready_count = [0]
        all_ready = asyncio.Event()
        tasks = [asyncio.create_task(device(i)) for i in range(len(tokens))]
        await all_ready.wait()
        self.result["connected"] = len(tokens)
        await self.ready_and_go()
        cpu0 = cpu_seconds()
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        self.result.update(have=have, back_at=back_at, lost_at=lost_at, cpu_seconds=cpu_seconds() - cpu0)

    # ---- plumbing ---------------------------------------------------------------------------------

    async def report_progress(self, count) -> None:
        """Print ``COUNT n`` every 100 ms until STOP, so the orchestrator knows when all arrived."""
        last = -1
        while not self.stop.is_set():
            now = count()
            if now != last:
                print(f"COUNT {now}", flush=True)
                last = now
            try:
                await asyncio.wait_for(self.stop.wait(), 0.1)
            except asyncio.TimeoutError:
                pass

    async def ready_and_go(self) -> None:
        print("READY", flush=True)
        await self.go.wait()

    async def control(self) -> None:
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if line == "GO":
                self.go.set()
            elif line in ("STOP", ""):
                self.go.set()
                self.stop.set()
                return

    async def run(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        control = asyncio.create_task(self.control())
        try:
            await getattr(self, "role_" + self.spec["role"])()
        finally:
            control.cancel()
            await self.session.close()
        print("RESULT " + json.dumps(self.result), flush=True)


def main() -> None:
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    run_async(Worker(spec).run())


if __name__ == "__main__":
    main()
