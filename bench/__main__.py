"""``make bench`` / ``python -m bench [--quick] [--only NAME ...]``: the messaging path under load.

The harness runs the real server processes (``xietong serve`` against the embedded MongoDB, with a
private redis-server for the multi-process runs) and load generators in separate processes
(``bench/worker.py``). It counts every message, and writes ``bench/results/latest.json``,
``latest.md`` and ``latest.png`` (latency against offered load), plus a timestamped copy of the JSON.
See ``docs/performance.md`` for what each figure means. The ``synapse`` scenario (``bench/side_by_side.py``)
runs Matrix Synapse, from its own virtual environment ``bench/.synapse-venv``, under the same workload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the process helpers the multi-process tests use

from cluster_support import RedisServer, ServerProcess, server_env  # noqa: E402

from xietong.server.config import Settings  # noqa: E402
from xietong.server.services import build_services  # noqa: E402
from xietong.server.store import Store  # noqa: E402
from xietong.server.runtime import run_async  # noqa: E402
from xietong.server.store.embedded import EmbeddedMongo, free_port  # noqa: E402

from xietong.server.access import Principal  # noqa: E402
from xietong.server.messaging.models import Message  # noqa: E402

from .cpu import Snapshot, quiet_check, window  # noqa: E402
from .population import Account, Population  # noqa: E402
from .report import percentile, write_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SETTLE = 3.0  # > the presence debounce of the servers under test (2 s)
DB_PROFILE = False  # --db-profile: print the database operations of each direct-message run
RATES: list[int] = []  # --rates: the offered rates of the direct-message scenario
DURATION = 0.0  # --duration: seconds per direct-message run
STORM_DEVICES = 0  # --storm-devices: devices in the reconnect storm
SCENARIOS = ("idle", "direct", "fanout", "storm", "scaling", "meetings", "synapse")
SYNAPSE_BACKENDS = ["SQLite", "PostgreSQL"]  # --synapse-db: the databases Synapse runs on, one after the other


def proc_times(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS in KiB) of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return cpu, rss


class WorkerProc:
    """One load-generator process (bench/worker.py)."""

    def __init__(self, proc: asyncio.subprocess.Process, spec_file: Path):
        self.proc = proc
        self.spec_file = spec_file
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._count = 0
        self._pump = asyncio.create_task(self._read())
        self.result: dict[str, Any] | None = None

    @classmethod
    async def spawn(cls, spec: dict[str, Any], tmp: Path, module: str = "bench.worker") -> "WorkerProc":
        spec_file = tmp / f"spec-{time.monotonic_ns()}.json"
        spec_file.write_text(json.dumps(spec))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, str(spec_file),
                                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                                                    limit=256 * 1024 * 1024)  # RESULT lines carry every latency
        return cls(proc, spec_file)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.lines.put("")
                return
            text = line.decode().rstrip("\n")
            if text.startswith("RESULT "):
                self.result = json.loads(text[7:])
            if text.startswith("COUNT "):
                self._count = int(text[6:])
                continue
            await self.lines.put(text)

    @property
    def count(self) -> int:
        return self._count

    async def expect(self, word: str, timeout: float = 300) -> str:
        while True:
            line = await asyncio.wait_for(self.lines.get(), timeout)
            if line.startswith(word):
                return line
            if line == "":
                raise RuntimeError(f"worker exited before {word}")

    def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{word}\n".encode())

    async def finish(self, timeout: float = 120) -> dict[str, Any]:
        if self.result is None:
            await self.expect("RESULT", timeout)
        await self.proc.wait()
        assert self.result is not None
        return self.result


async def ready_all(workers: list[WorkerProc]) -> None:
    await asyncio.gather(*(w.expect("READY") for w in workers))


def go_all(workers: list[WorkerProc]) -> None:
    for w in workers:
        w.tell("GO")


async def stop_all(workers: list[WorkerProc]) -> list[dict[str, Any]]:
    for w in workers:
        w.tell("STOP")
    return list(await asyncio.gather(*(w.finish() for w in workers)))


async def wait_counts(workers: list[WorkerProc], expected: int, timeout: float) -> bool:
    """Wait until the workers together counted ``expected`` arrivals (or ``timeout`` passed)."""
    deadline = time.time() + timeout
    while sum(w.count for w in workers) < expected:
        if time.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts) if items[i::parts]]


@dataclass
class Deployment:
    """Server processes on one database (and Redis when there are several)."""

    bench: "Bench"
    db_name: str
    servers: list[ServerProcess] = field(default_factory=list)
    redis: RedisServer | None = None
    population: Population | None = None
    store: Store | None = None

    async def start(self, processes: int, *, use_redis: bool) -> None:
        b = self.bench
        if use_redis:
            self.redis = RedisServer(b.tmp)
            self.redis.start()
        env = server_env(b.mongo.url, self.db_name, self.redis.url if self.redis else "", b.keys_dir, b.tmp,
                         XT_LOG_LEVEL="WARNING", XT_PRESENCE_TTL_SECONDS="45", XT_PRESENCE_DEBOUNCE_SECONDS="2")
        if not use_redis:
            env.pop("XT_REDIS_URL")
        self.env = env
        for i in range(processes):
            self.servers.append(ServerProcess(dict(env, XT_PORT=str(free_port())), f"server-{i}"))
        await asyncio.gather(*(s.wait_ready() for s in self.servers))
        settings = Settings.from_env({}, mongo_url=b.mongo.url, mongo_db=self.db_name, keys_dir=b.keys_dir,
                                     data_dir=b.tmp, seed_demo=False)
        self.store = Store.connect(b.mongo.url, self.db_name)
        self.population = Population(build_services(settings, self.store))

    def ws(self, index: int = 0) -> str:
        return self.servers[index].url.replace("http://", "ws://") + "/v1/ws"

    async def stop_server(self, index: int = 0) -> float:
        """SIGTERM a server (it drains); returns when it has exited."""
        await self.servers[index].terminate()
        return time.time()

    async def start_again(self, index: int = 0) -> float:
        """Start a stopped server on the same port; returns when it serves."""
        old = self.servers[index]
        new = ServerProcess(dict(self.env, XT_PORT=old.url.rsplit(":", 1)[1]), old.name)
        await new.wait_ready()
        self.servers[index] = new
        return time.time()

    async def close(self) -> None:
        for server in self.servers:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in self.servers:
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        if self.redis:
            self.redis.stop()
        if self.population is not None:
            await self.population.services.writer.stop()
        if self.store is not None:
            await self.store.client.drop_database(self.db_name)
            await self.store.close()


class Bench:
    def __init__(self, quick: bool, only: list[str] | None):
        self.quick = quick
        self.only = only
        self.tmp = Path(tempfile.mkdtemp(prefix="xietong-bench-"))
        self.keys_dir = self.tmp / "keys"
        self.mongo = EmbeddedMongo(self.tmp / "db", log_path=self.tmp / "db.log")
        self.results: dict[str, Any] = {}
        self.synapse_version: str | None = None

    def selected(self) -> list[str]:
        if self.only:
            return [name for name in SCENARIOS if name in self.only]
        # The side-by-side with Synapse alone takes close to 3 minutes with the quick sizes (Synapse's setup,
        # then the backlog it works off), the limit of the whole quick run: `--quick --only synapse` runs it.
        return [name for name in SCENARIOS if not (self.quick and name == "synapse")]

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    async def deployment(self, name: str, processes: int = 1, *, use_redis: bool = False) -> Deployment:
        d = Deployment(self, f"bench_{name}_{int(time.time())}")
        await d.start(processes, use_redis=use_redis)
        return d

    # ---- 1. idle connections -------------------------------------------------------------------------

    async def idle(self) -> dict[str, Any]:
        count = 2000 if self.quick else 10_000
        d = await self.deployment("idle")
        try:
            accounts = await d.population.accounts(count, "idle")
            pid = d.servers[0].proc.pid
            await asyncio.sleep(1)
            _, rss_before = proc_times(pid)
            workers = [await WorkerProc.spawn({"role": "idle", "url": d.ws(), "tokens": [a.token for a in part]},
                                              self.tmp) for part in split(accounts, 4)]
            started = time.time()
            await ready_all(workers)
            connect_seconds = time.time() - started
            await asyncio.sleep(2)
            cpu0, rss_after = proc_times(pid)
            seconds = 5 if self.quick else 15
            first = Snapshot.now()
            await asyncio.sleep(seconds)
            cpu1, _ = proc_times(pid)
            machine_cpu = window(first, Snapshot.now())
            go_all(workers)
            results = await stop_all(workers)
            connected = sum(r["connected"] for r in results)
            return {"connections": connected, "wanted": count, "connect_seconds": round(connect_seconds, 2),
                    "rss_before_mib": round(rss_before / 1024, 1), "rss_after_mib": round(rss_after / 1024, 1),
                    "kib_per_connection": round((rss_after - rss_before) / connected, 2),
                    "idle_cpu_percent": round(100 * (cpu1 - cpu0) / seconds, 2), "idle_window_seconds": seconds,
                    **machine_cpu}
        finally:
            await d.close()

    # ---- 2. direct messages -------------------------------------------------------------------------

    async def _direct_run(self, d: Deployment, senders: list[Account], receivers: list[Account],
                          conversations: list[str], rate: float, duration: float, tag: str,
                          send_server: int = 0, receive_server: int = 0) -> dict[str, Any]:
        per_socket = rate / len(senders)
        receive_workers = [await WorkerProc.spawn({"role": "receive", "url": d.ws(receive_server),
                                                   "tokens": [a.token for a in part]}, self.tmp)
                           for part in split(receivers, 2)]
        pairs = list(zip(senders, conversations))
        send_workers = [await WorkerProc.spawn({
            "role": "send", "url": d.ws(send_server), "tokens": [a.token for a, _ in part],
            "conversations": [c for _, c in part], "rate_per_socket": per_socket, "duration": duration,
            "tag": tag, "drain": 15}, self.tmp) for part in split(pairs, 2)]
        await ready_all(receive_workers + send_workers)
        await asyncio.sleep(SETTLE)  # let connection-time work (presence announcements) pass
        server_pids = [s.proc.pid for s in d.servers]
        cpu_before = [proc_times(p)[0] for p in server_pids]
        db_cpu_before = proc_times(self.mongo.process.pid)[0]  # type: ignore[union-attr]
        if DB_PROFILE:
            await d.store.db.command({"profile": 2})
        first = Snapshot.now()
        started = time.time()
        go_all(receive_workers + send_workers)
        sent = await asyncio.gather(*(w.finish(duration + 60) for w in send_workers))
        acked = sum(r["acked"] for r in sent)
        await wait_counts(receive_workers, acked, timeout=15)  # every acknowledged message, or give up
        received = await stop_all(receive_workers)
        elapsed = time.time() - started
        machine_cpu = window(first, Snapshot.now())
        await asyncio.sleep(SETTLE)  # the disconnections' presence work, before the next run
        if DB_PROFILE:
            await d.store.db.command({"profile": 0})
            import collections
            ops = collections.Counter()
            millis = collections.Counter()
            shown = set()
            async for doc in d.store.db["system.profile"].find({}):
                key = (doc.get("op"), doc.get("ns"))
                if key not in shown:
                    shown.add(key)
                    self.log(f"  example {key}: {str(doc.get('command'))[:300]} planSummary={doc.get('planSummary')}")
                ops[key] += 1
                millis[key] += doc.get("millis", 0)
            for key, n in ops.most_common(15):
                self.log(f"  {key}: {n} ops, {millis[key]} ms")
            await d.store.db["system.profile"].drop()
        cpu_after = [proc_times(p)[0] for p in server_pids]
        db_cpu = proc_times(self.mongo.process.pid)[0] - db_cpu_before  # type: ignore[union-attr]
        acks = [x for r in sent for x in r["ack_latencies"]]
        deliveries = [x for r in received for x in r["latencies"]]
        send_elapsed = max(r["elapsed"] for r in sent)
        errors: dict[str, int] = {}
        for r in sent:
            for code, n in r.get("error_codes", {}).items():
                errors[code] = errors.get(code, 0) + n
        return {
            "offered_per_second": rate, "duration_seconds": duration,
            "sent": sum(r["sent"] for r in sent), "acked": acked, "received": len(deliveries),
            "completeness_percent": round(100 * len(deliveries) / acked, 3) if acked else 0.0,
            "achieved_per_second": round(acked / send_elapsed, 1),
            "ack_ms": {p: round(1000 * percentile(acks, p), 1) for p in (50, 95, 99)},
            "delivery_ms": {p: round(1000 * percentile(deliveries, p), 1) for p in (50, 95, 99)},
            "errors": errors,
            "server_cpu_percent": [round(100 * (a - b) / elapsed, 1) for a, b in zip(cpu_after, cpu_before)],
            "database_cpu_percent": round(100 * db_cpu / elapsed, 1),
            "generator_cpu_percent": round(100 * sum(r["cpu_seconds"] for r in sent + received) / elapsed, 1),
            **machine_cpu,
        }

    async def direct(self) -> dict[str, Any]:
        pairs = 200 if self.quick else 500
        rates = RATES or ([250, 500, 1000] if self.quick else [250, 500, 1000, 2000])
        duration = DURATION or (4 if self.quick else 10)
        d = await self.deployment("direct")
        try:
            senders = await d.population.accounts(pairs, "ds")
            receivers = await d.population.accounts(pairs, "dr")
            conversations = [await d.population.direct(s, r) for s, r in zip(senders, receivers)]
            runs = []
            for rate in rates:
                self.log(f"direct messages at {rate}/s")
                run = await self._direct_run(d, senders, receivers, conversations, rate, duration, f"r{rate}")
                runs.append(run)
                self.log(f"  achieved {run['achieved_per_second']}/s, delivery p99 {run['delivery_ms'][99]} ms")
            if not self.quick and not RATES:  # keep going until the server cannot keep up
                rate = rates[-1]
                while rate < 20_000:
                    last = runs[-1]
                    if (last["delivery_ms"][99] > 1000 or last["completeness_percent"] < 100
                            or last["achieved_per_second"] < 0.9 * last["offered_per_second"]):
                        break
                    rate = int(rate * 1.5)
                    self.log(f"direct messages at {rate}/s")
                    runs.append(await self._direct_run(d, senders, receivers, conversations, rate, duration,
                                                       f"r{rate}"))
                    self.log(f"  achieved {runs[-1]['achieved_per_second']}/s, delivery p99 "
                             f"{runs[-1]['delivery_ms'][99]} ms")
            good = [r for r in runs if r["delivery_ms"][99] < 200 and r["completeness_percent"] >= 100
                    and r["achieved_per_second"] >= 0.9 * r["offered_per_second"]]
            return {"pairs": pairs, "runs": runs,
                    "highest_rate_with_p99_under_200ms": max((r["offered_per_second"] for r in good), default=None),
                    "max_sustained_per_second": max(r["achieved_per_second"] for r in runs
                                                    if r["completeness_percent"] >= 100)}
        finally:
            await d.close()

    # ---- 3. group fan-out ---------------------------------------------------------------------------

    async def fanout(self) -> dict[str, Any]:
        sizes = [100, 1000] if self.quick else [100, 1000, 5000]
        messages = 5 if self.quick else 10
        d = await self.deployment("fanout")
        results = []
        try:
            for size in sizes:
                self.log(f"group fan-out to {size} members")
                members = await d.population.accounts(size, f"g{size}-")
                sender = members[0]
                cid = await d.population.group(sender, members[1:], f"{size}人群")
                receivers = members[1:]
                xietong = await self._fanout_run(d.ws(), [a.token for a in receivers], sender.token, cid,
                                                 messages, f"g{size}")
                baseline = await self._baseline_run(size - 1, messages)
                results.append({"members": size, "messages": messages, "xietong": xietong, "bare_aiohttp": baseline})
                self.log(f"  xietong {xietong['deliveries_per_second']}/s, bare aiohttp "
                         f"{baseline['deliveries_per_second']}/s")
        finally:
            await d.close()
        return {"groups": results}

    async def _fanout_run(self, url: str, tokens: list[str], sender_token: str, cid: str, messages: int,
                          tag: str) -> dict[str, Any]:
        receive = [await WorkerProc.spawn({"role": "receive", "url": url, "tokens": part, "track_arrivals": True},
                                          self.tmp) for part in split(tokens, 2)]
        # A burst: the messages go out back to back (the sender's burst allowance is 40).
        send = await WorkerProc.spawn({"role": "send", "url": url, "tokens": [sender_token], "conversations": [cid],
                                       "rate_per_socket": 1000, "duration": messages / 1000, "tag": tag,
                                       "drain": 30}, self.tmp)
        await ready_all(receive + [send])
        first = Snapshot.now()
        go_all(receive + [send])
        sent = await send.finish()
        expected = len(tokens) * sent["acked"]
        await wait_counts(receive, expected, timeout=60)
        machine_cpu = window(first, Snapshot.now())
        results = await stop_all(receive)
        return {**_fanout_figures(results, expected), **machine_cpu}

    async def _baseline_run(self, sockets: int, messages: int) -> dict[str, Any]:
        import aiohttp

        port = free_port()
        server = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.baseline", str(port),
                                                      stdout=subprocess.PIPE, cwd=ROOT)
        assert server.stdout is not None
        await server.stdout.readline()
        try:
            receive = [await WorkerProc.spawn({"role": "baseline", "url": f"ws://127.0.0.1:{port}/ws",
                                               "count": len(part)}, self.tmp)
                       for part in split(list(range(sockets)), 2)]
            await ready_all(receive)
            first = Snapshot.now()
            go_all(receive)
            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://127.0.0.1:{port}/broadcast", params={"k": "m", "n": str(messages)}) as r:
                    await r.text()
            await wait_counts(receive, sockets * messages, timeout=60)
            machine_cpu = window(first, Snapshot.now())
            results = await stop_all(receive)
        finally:
            server.terminate()
            await server.wait()
        return {**_fanout_figures(results, sockets * messages), **machine_cpu}

    # ---- 4. reconnect storm ----------------------------------------------------------------------------

    async def storm(self) -> dict[str, Any]:
        devices = STORM_DEVICES or (1000 if self.quick else 5000)
        group_size = 100
        d = await self.deployment("storm")
        try:
            accounts = await d.population.accounts(devices, "st")
            groups = [accounts[i:i + group_size] for i in range(0, devices, group_size)]
            conversation_of: dict[str, str] = {}
            for members in groups:
                cid = await d.population.group(members[0], members[1:], "重连群")
                for m in members:
                    conversation_of[m.user_id] = cid
            parts = split(accounts, 4)
            workers = [await WorkerProc.spawn({"role": "storm", "url": d.ws(), "tokens": [a.token for a in part],
                                               "conversations": [conversation_of[a.user_id] for a in part]},
                                              self.tmp) for part in parts]
            await ready_all(workers)
            go_all(workers)
            first = Snapshot.now()
            self.log(f"restarting the server under {devices} devices")
            stopped = await d.stop_server()
            # While it is down, messages arrive in every group (written through the service, as another
            # server process would): the devices must find them when they are back.
            services = d.population.services
            for members in groups:
                cid = conversation_of[members[0].user_id]
                for n in range(3):
                    await services.messages.send(Principal(members[0].user_id, None), cid, f"storm-{cid}-{n}",
                                                 Message(kind="text", text=f"{time.time():.6f} 重连期间的消息"))
            heads = {cid: (await d.store.conversations.get(cid)).last_seq for cid in set(conversation_of.values())}
            ready = await d.start_again()
            try:
                await asyncio.gather(*(w.expect("BACK", timeout=60 if self.quick else 180) for w in workers))
            except asyncio.TimeoutError:
                self.log("  not every device came back in time")
            machine_cpu = window(first, Snapshot.now())
            results = await stop_all(workers)
            back = [t for r in results for t in r["back_at"]]
            have = [h for r, part in zip(results, parts) for h in r["have"]]
            wanted = [heads[conversation_of[a.user_id]] for part in parts for a in part]
            reconnected = [t for t in back if t is not None]
            complete = sum(1 for h, w in zip(have, wanted) if h == w)
            return {"devices": devices, "reconnected": len(reconnected), "synced_complete": complete,
                    "seconds_until_all_back_from_restart_ready": round(max(reconnected) - ready, 2) if reconnected
                    else None,
                    "seconds_until_all_back_from_shutdown": round(max(reconnected) - stopped, 2) if reconnected
                    else None,
                    "server_down_seconds": round(ready - stopped, 2), **machine_cpu}
        finally:
            await d.close()

    # ---- 5. one process vs two -------------------------------------------------------------------------

    async def scaling(self) -> dict[str, Any]:
        pairs = 200 if self.quick else 500
        rate = 1000 if self.quick else 2000
        duration = 4 if self.quick else 10
        out = {}
        for processes in (1, 2):
            self.log(f"direct messages at {rate}/s on {processes} process(es) with Redis")
            d = await self.deployment(f"scale{processes}", processes, use_redis=True)
            try:
                senders = await d.population.accounts(pairs, "ss")
                receivers = await d.population.accounts(pairs, "sr")
                conversations = [await d.population.direct(s, r) for s, r in zip(senders, receivers)]
                out[f"{processes}_process"] = await self._direct_run(
                    d, senders, receivers, conversations, rate, duration, f"s{processes}", send_server=0,
                    receive_server=processes - 1)
            finally:
                await d.close()
        return {"offered_per_second": rate, **out}

    # ---- meetings: join → media connected ---------------------------------------------------------

    async def meetings(self) -> dict[str, Any]:
        from .meetings import meetings

        return await meetings(self)

    # ---- 6. side by side with Matrix Synapse --------------------------------------------------------------

    async def synapse(self) -> dict[str, Any]:
        from .side_by_side import side_by_side

        assert self.synapse_version is not None, "ensure_installed runs before the clock starts"
        return await side_by_side(self, self.synapse_version, SYNAPSE_BACKENDS, rates=RATES, duration=DURATION)

    # ---- run ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        before = quiet_check()  # the machine's load before anything of ours runs
        self.log(f"machine before the run: {before['machine_cpu_percent']} % of one core busy, "
                 f"load average {before['load_average_1min']:.2f}")
        self.mongo.start()
        try:
            for name in self.selected():
                self.log(f"scenario {name}")
                began, first = time.time(), Snapshot.now()
                self.results[name] = await getattr(self, name)()
                self.results[name]["scenario_seconds"] = round(time.time() - began, 1)
                self.results[name]["scenario_cpu"] = window(first, Snapshot.now())
        finally:
            self.mongo.stop()
        write_report(self.results, {**machine(), "before_run": before}, quick=self.quick, out=RESULTS)


def _fanout_figures(results: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    """Per message: [sent at, first arrival, last arrival, arrivals], merged over the workers."""
    arrivals: dict[str, list[float]] = {}
    for r in results:
        for key, (sent, first, last, n) in r["arrivals"].items():
            a = arrivals.setdefault(key, [sent, first, last, 0])
            a[1], a[2], a[3] = min(a[1], first), max(a[2], last), a[3] + n
    delivered = int(sum(a[3] for a in arrivals.values()))
    if not arrivals:
        return {"delivered": 0, "expected": expected, "deliveries_per_second": 0}
    first_send = min(a[0] for a in arrivals.values())
    last_arrival = max(a[2] for a in arrivals.values())
    to_last = sorted(a[2] - a[0] for a in arrivals.values())
    return {"delivered": delivered, "expected": expected,
            "completeness_percent": round(100 * delivered / expected, 3) if expected else 0,
            "deliveries_per_second": round(delivered / max(last_arrival - first_send, 1e-6)),
            "send_to_last_member_ms_median": round(1000 * to_last[len(to_last) // 2], 1),
            "send_to_last_member_ms_max": round(1000 * to_last[-1], 1),
            "burst_seconds": round(last_arrival - first_send, 3),
            "generator_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 2)}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(mem) / 1024 / 1024, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs (under 3 minutes)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, metavar="NAME",
                        help=f"scenarios to run: {' '.join(SCENARIOS)}")
    parser.add_argument("--rates", nargs="*", type=int,
                        help="direct-message rates to offer (messages/s), also in the synapse scenario")
    parser.add_argument("--duration", type=float, help="seconds per direct-message run, also in the synapse scenario")
    parser.add_argument("--storm-devices", type=int, help="devices in the reconnect storm (default 1,000 quick, 5,000 full)")
    parser.add_argument("--db-profile", action="store_true",
                        help="print the database operations (count, time) of each direct-message run")
    parser.add_argument("--synapse-db", nargs="*", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"],
                        help="the databases the synapse scenario runs Synapse on")
    args = parser.parse_args()
    global DB_PROFILE, RATES, DURATION, STORM_DEVICES
    DB_PROFILE = args.db_profile
    STORM_DEVICES = args.storm_devices or 0
    RATES = args.rates or []
    DURATION = args.duration or 0.0
    SYNAPSE_BACKENDS[:] = [b for b in SYNAPSE_BACKENDS if b.lower() in args.synapse_db]
    bench = Bench(args.quick, args.only)
    if "synapse" in bench.selected():  # before the clock starts: the first time installs Synapse
        from .synapse_server import ensure_installed

        bench.synapse_version = ensure_installed(bench.log)
    began = time.time()
    run_async(bench.run())
    if args.quick and not args.only:
        print("the synapse scenario is not part of the default quick run (it would take it past 3 minutes): "
              "python -m bench --quick --only synapse")
    name = "latest-quick" if args.quick else "latest"
    print(f"bench finished in {time.time() - began:.0f} s; results in {RESULTS}/{name}.md")


if __name__ == "__main__":
    main()
