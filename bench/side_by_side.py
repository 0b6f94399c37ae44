"""The ``synapse`` scenario: Xietong and Matrix Synapse side by side, same machine, same workload.

Two workloads, each run on Xietong (its WebSocket API, embedded MongoDB) and on Synapse (the Matrix
client-server API: send + /sync), on SQLite and, when the local PostgreSQL answers, on PostgreSQL:

- direct messages: P sender/recipient pairs, each pair in its own private room (Xietong: direct
  chat), open-loop senders at the offered rates; every user is online (a Xietong socket, or a Synapse
  /sync long-poll — senders included). Send→ack and send→recipient latency, every message counted.
  Synapse's rates stop at the first one it cannot keep up with (what it achieved is recorded).
- small group: one room of 20 members, 5 of them sending 50 messages each at 100/s in total; delivery
  to all 20 members (each member's own messages included: they reach its other connection / its sync).

Creating users and rooms is setup, not measured. The load generators are separate processes
(``bench/worker.py`` for Xietong, ``bench/matrix_worker.py`` for Synapse), their CPU reported.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .cpu import machine_busy_seconds
from .report import percentile
from .synapse_server import (CHANGED_SETTINGS, POSTGRES, RAISED, RAISED_LIMITS, UNCHANGED_NOTE, SynapseServer,
                             cluster_cpu_seconds, postgres_create, postgres_drop)

if TYPE_CHECKING:
    from .__main__ import Bench, WorkerProc

GROUP_MEMBERS, GROUP_SENDERS, GROUP_MESSAGES_EACH, GROUP_RATE = 20, 5, 50, 100
SYNC_TIMEOUT_MS = 5000  # the /sync long-poll timeout (a poll returns at once when there is news)
SETTLE = 3.0  # > the presence debounce of the Xietong server (2 s)
# A server that falls behind works off its backlog: senders wait up to DRAIN s for their answers (so the
# backlog counts in the achieved rate), recipients until nothing more arrived for STALL s.
DRAIN, STALL = 120.0, 15.0


def sizes(quick: bool) -> tuple[int, list[int], float]:
    """(pairs, offered rates, seconds per run)"""
    return (200, [250, 500], 4.0) if quick else (300, [250, 500, 1000], 10.0)


class CpuMeter:
    """CPU seconds of the server processes, of the database and of the whole machine, read at moments of a run."""

    def __init__(self, server_pids: list[int], database_seconds: Callable[[], float] | None):
        from .__main__ import proc_times

        self.server = lambda: sum(proc_times(p)[0] for p in server_pids)
        self.database = database_seconds

    def snapshot(self) -> tuple[float, float, float | None, float]:
        return time.time(), self.server(), self.database() if self.database else None, machine_busy_seconds()

    @staticmethod
    def percent(first: tuple, last: tuple) -> dict[str, Any]:
        """% of one core between two snapshots."""
        elapsed = max(last[0] - first[0], 1e-6)
        return {"server_cpu_percent": round(100 * (last[1] - first[1]) / elapsed, 1),
                "database_cpu_percent": round(100 * (last[2] - first[2]) / elapsed, 1)
                if first[2] is not None else None}

    @staticmethod
    def others_percent(first: tuple, end: tuple, generator_seconds: float) -> float:
        """% of one core that the rest of the machine used (not server, database or load generators)."""
        ours = (end[1] - first[1]) + ((end[2] - first[2]) if first[2] is not None else 0.0) + generator_seconds
        return round(100 * max(0.0, end[3] - first[3] - ours) / max(end[0] - first[0], 1e-6), 1)


def figures(sent: list[dict], received: list[dict], expected: int, offered: float, cpu: dict[str, Any],
            window: float, **extra: Any) -> dict:
    """One row's numbers from the send and receive workers' results (their CPU was counted over ``window`` s)."""
    acked = sum(r["acked"] for r in sent)
    acks = [x for r in sent for x in r["ack_latencies"]]
    deliveries = [x for r in received for x in r["latencies"]]
    errors: dict[str, int] = {}
    for r in sent + received:
        for code, n in r.get("error_codes", {}).items():
            errors[code] = errors.get(code, 0) + n
    row = {"offered_per_second": offered, "sent": sum(r["sent"] for r in sent), "acked": acked,
           "unanswered": sum(r["unacked"] for r in sent), "expected_deliveries": expected,
           "received": len(deliveries),
           "completeness_percent": round(100 * len(deliveries) / expected, 3) if expected else 0.0,
           "achieved_per_second": round(acked / max(r["elapsed"] for r in sent), 1),
           "ack_ms": {p: round(1000 * percentile(acks, p), 1) for p in (50, 95, 99)},
           "delivery_ms": {p: round(1000 * percentile(deliveries, p), 1) for p in (50, 95, 99)},
           "errors": errors, **cpu,
           "generator_cpu_percent": round(100 * sum(r["cpu_seconds"] for r in sent + received) / window, 1),
           "timelines_cut_short": sum(r.get("limited_timelines", 0) for r in received), **extra}
    to_last = sorted(a[2] - a[0] for a in _merged_arrivals(received).values())
    if to_last:  # tracked in the group runs
        row["send_to_last_member_ms"] = {p: round(1000 * percentile(to_last, p), 1) for p in (50, 99)}
    return row


def _merged_arrivals(results: list[dict]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for r in results:
        for key, (sent, first, last, n) in r.get("arrivals", {}).items():
            a = merged.setdefault(key, [sent, first, last, 0])
            a[1], a[2], a[3] = min(a[1], first), max(a[2], last), a[3] + n
    return merged


async def measured_run(send: list["WorkerProc"], receive: list["WorkerProc"], per_message: int, offered: float,
                       meter: CpuMeter, duration: float) -> dict[str, Any]:
    """GO; the run lasts until every answered message reached every recipient, or nothing more arrived for
    ``STALL`` seconds. Server and database CPU count up to the last progress (answer or arrival)."""
    from .__main__ import go_all, ready_all, stop_all

    await ready_all(receive + send)
    await asyncio.sleep(SETTLE)  # the connection-time work (presence) passes first
    first = last = meter.snapshot()
    go_all(receive + send)
    sending = asyncio.ensure_future(asyncio.gather(*(w.finish(duration + DRAIN + 60) for w in send)))
    seen, sends_over = -1, False
    while True:
        count = sum(w.count for w in receive)
        if count != seen or (sending.done() and not sends_over):
            seen, sends_over, last = count, sending.done(), meter.snapshot()
        if sending.done():
            expected = per_message * sum(r["acked"] for r in sending.result())
            if count >= expected or time.time() - last[0] > STALL:
                break
        await asyncio.sleep(0.1)
    received = await stop_all(receive)
    end = meter.snapshot()
    generator = sum(r["cpu_seconds"] for r in sending.result() + received)
    await asyncio.sleep(SETTLE)  # the disconnections' work, before the next run
    return figures(sending.result(), received, expected, offered, meter.percent(first, last), end[0] - first[0],
                   other_cpu_percent=meter.others_percent(first, end, generator))


def keeps_up(row: dict[str, Any]) -> bool:
    return row["achieved_per_second"] >= 0.9 * row["offered_per_second"] and row["completeness_percent"] >= 99.9


# ---- Xietong --------------------------------------------------------------------------------------------

async def xietong_half(bench: "Bench", pairs: int, rates: list[int], duration: float) -> list[dict[str, Any]]:
    from .__main__ import WorkerProc, split

    label = {"system": "Xietong", "database": "embedded MongoDB"}
    d = await bench.deployment("sidebyside")
    rows = []

    async def workers(role: str, accounts: list[Any], **spec: Any) -> list[WorkerProc]:
        return [await WorkerProc.spawn({"role": role, "url": d.ws(), "tokens": [a.token for a in part], **spec},
                                       bench.tmp) for part in split(accounts, 2)]

    try:
        meter = CpuMeter([s.proc.pid for s in d.servers], lambda: _pid_cpu(bench.mongo.process.pid))
        senders = await d.population.accounts(pairs, "xs")
        receivers = await d.population.accounts(pairs, "xr")
        conversations = {s.token: await d.population.direct(s, r) for s, r in zip(senders, receivers)}
        for rate in rates:
            bench.log(f"Xietong: direct messages at {rate}/s")
            receive = await workers("receive", receivers)
            send = [await WorkerProc.spawn({
                "role": "send", "url": d.ws(), "tokens": [a.token for a in part],
                "conversations": [conversations[a.token] for a in part], "rate_per_socket": rate / pairs,
                "duration": duration, "tag": f"x{rate}", "drain": DRAIN}, bench.tmp) for part in split(senders, 2)]
            row = await measured_run(send, receive, 1, rate, meter, duration)
            rows.append({**label, "workload": "direct", "duration_seconds": duration, **row})
            bench.log(f"  achieved {row['achieved_per_second']}/s, delivery p99 {row['delivery_ms'][99]} ms")
        members = await d.population.accounts(GROUP_MEMBERS, "xg")
        cid = await d.population.group(members[0], members[1:], "对比群")
        bench.log(f"Xietong: group of {GROUP_MEMBERS}, {GROUP_SENDERS} senders at {GROUP_RATE}/s in total")
        # The senders' sockets send; each member's delivery is counted on another socket (for the senders,
        # their second device: a device holds one connection at a time).
        listeners = await d.population.other_devices(members[:GROUP_SENDERS]) + members[GROUP_SENDERS:]
        receive = await workers("receive", listeners, track_arrivals=True)
        send = await workers("send", members[:GROUP_SENDERS], conversations=[cid] * GROUP_SENDERS, tag="xg",
                             rate_per_socket=GROUP_RATE / GROUP_SENDERS, drain=DRAIN,
                             duration=GROUP_MESSAGES_EACH * GROUP_SENDERS / GROUP_RATE)
        row = await measured_run(send, receive, GROUP_MEMBERS, GROUP_RATE, meter, 5)
        rows.append({**label, "workload": f"group of {GROUP_MEMBERS}", **row})
        bench.log(f"  achieved {row['achieved_per_second']}/s, delivery p99 {row['delivery_ms'][99]} ms")
    finally:
        await d.close()
    return rows


def _pid_cpu(pid: int) -> float:
    from .__main__ import proc_times

    return proc_times(pid)[0]


# ---- Synapse --------------------------------------------------------------------------------------------

def _synapse_database(backend: str, workdir: Path, db_name: str) -> tuple[dict, str, Callable[[], float] | None]:
    """Synapse's ``database`` setting, the row's database label, and how to read the database's CPU."""
    if backend == "SQLite":
        return {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}}, "SQLite", None
    version, postmaster = postgres_create(db_name)
    database = {"name": "psycopg2", "args": {"host": POSTGRES["host"], "port": POSTGRES["port"],
                                             "user": POSTGRES["user"], "database": db_name, "cp_min": 5, "cp_max": 10}}
    cpu = (lambda: cluster_cpu_seconds(postmaster)) if postmaster is not None else None
    return database, f"PostgreSQL {version}", cpu


async def _matrix_workers(bench: "Bench", role: str, parts: list[list[Any]], **spec: Any) -> list["WorkerProc"]:
    from .__main__ import WorkerProc

    key = "users" if role == "matrix_sync" else "senders"
    return [await WorkerProc.spawn({"role": role, key: part, **spec}, bench.tmp, module="bench.matrix_worker")
            for part in parts]


async def synapse_half(bench: "Bench", backend: str, pairs: int, rates: list[int], duration: float,
                       rows: list[dict[str, Any]]) -> None:
    """Synapse on ``backend``: its rows are appended to ``rows`` as they come (a failure keeps the earlier ones)."""
    from .__main__ import split

    workdir = bench.tmp / f"synapse-{backend.lower()}"
    db_name = f"xietong_bench_synapse_{int(time.time())}"
    database, db_label, database_seconds = await asyncio.to_thread(_synapse_database, backend, workdir, db_name)
    label = {"system": "Synapse", "database": db_label}
    server = SynapseServer(workdir, database)
    failed = True
    try:
        await server.start()
        began = time.time()
        senders = await server.register(pairs, "s")
        recipients = await server.register(pairs, "r")
        rooms = await server.direct_rooms(senders, recipients)
        bench.log(f"Synapse ({backend}): {2 * pairs} users and {pairs} rooms set up in {time.time() - began:.0f} s")
        meter = CpuMeter([server.pid], database_seconds)
        on_line = dict(url=server.url, timeout_ms=SYNC_TIMEOUT_MS)
        sending = dict(url=server.url, drain=DRAIN)
        for rate in rates:
            bench.log(f"Synapse ({backend}): direct messages at {rate}/s")
            receive = await _matrix_workers(bench, "matrix_sync", split(
                [[u.user_id, u.token] for u in recipients + senders], 2), **on_line)
            send = await _matrix_workers(bench, "matrix_send", split(
                [[u.token, room] for u, room in zip(senders, rooms)], 2),
                rate_per_sender=rate / pairs, duration=duration, tag=f"m{rate}", **sending)
            row = await measured_run(send, receive, 1, rate, meter, duration)
            rows.append({**label, "workload": "direct", "duration_seconds": duration, **row})
            bench.log(f"  achieved {row['achieved_per_second']}/s, complete {row['completeness_percent']} %, "
                      f"delivery p99 {row['delivery_ms'][99]} ms")
            if not keeps_up(row):
                bench.log(f"  Synapse ({backend}) did not keep up at {rate}/s: no higher rate")
                break
        members = await server.register(GROUP_MEMBERS, "g")
        room = await server.room(members[0], members[1:], "bench group", direct=False)
        bench.log(f"Synapse ({backend}): group of {GROUP_MEMBERS}, {GROUP_SENDERS} senders at {GROUP_RATE}/s")
        receive = await _matrix_workers(bench, "matrix_sync", split([[u.user_id, u.token] for u in members], 2),
                                        count_own=True, track_arrivals=True, **on_line)
        send = await _matrix_workers(bench, "matrix_send", split([[u.token, room] for u in members[:GROUP_SENDERS]], 2),
                                     rate_per_sender=GROUP_RATE / GROUP_SENDERS, tag="mg",
                                     duration=GROUP_MESSAGES_EACH * GROUP_SENDERS / GROUP_RATE, **sending)
        row = await measured_run(send, receive, GROUP_MEMBERS, GROUP_RATE, meter, 5)
        rows.append({**label, "workload": f"group of {GROUP_MEMBERS}", **row})
        bench.log(f"  achieved {row['achieved_per_second']}/s, delivery p99 {row['delivery_ms'][99]} ms")
        failed = False
    finally:
        await server.stop(remove_data=not failed)  # its logs stay in the temporary folder when it failed
        if backend != "SQLite":
            await asyncio.to_thread(postgres_drop, db_name)


async def side_by_side(bench: "Bench", synapse_version: str, backends: list[str], *, rates: list[int] | None = None,
                       duration: float = 0.0) -> dict[str, Any]:
    """``rates`` and ``duration`` (``--rates``, ``--duration``) replace the sizes' defaults when given."""
    pairs, default_rates, default_duration = sizes(bench.quick)
    rates, duration = rates or default_rates, duration or default_duration
    rows = await xietong_half(bench, pairs, rates, duration)
    not_run: dict[str, str] = {}
    for backend in backends:
        try:
            await synapse_half(bench, backend, pairs, rates, duration, rows)
        except (RuntimeError, OSError, subprocess.SubprocessError, asyncio.TimeoutError) as e:
            bench.log(f"Synapse ({backend}) stopped: {e}")  # e.g. no PostgreSQL here: the report says so
            not_run[backend] = str(e) or type(e).__name__
    return {"pairs": pairs, "rates": rates, "duration_seconds": duration, "sync_timeout_ms": SYNC_TIMEOUT_MS,
            "drain_seconds": DRAIN, "stall_seconds": STALL,
            "group": {"members": GROUP_MEMBERS, "senders": GROUP_SENDERS, "messages_each": GROUP_MESSAGES_EACH,
                      "offered_per_second": GROUP_RATE},
            "synapse_version": synapse_version, "rows": rows, "not_run": not_run,
            "synapse_changed_settings": CHANGED_SETTINGS,
            "synapse_raised_limits": {k: {"default": d, "why": w, "set_to": f"{RAISED['per_second']}/s, burst "
                                                                             f"{RAISED['burst_count']}"}
                                      for k, (d, w) in RAISED_LIMITS.items()},
            "synapse_unchanged": UNCHANGED_NOTE}
