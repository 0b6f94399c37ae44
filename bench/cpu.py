"""CPU accounting for the benchmark: the whole machine, and what of it the benchmark itself used.

A run on a shared machine is slower for reasons that are not Xietong's. Every figure therefore comes
with the machine-wide CPU over the same window (``/proc/stat``: all processes, all cores) and the part
of it that no process of the benchmark used ("other processes"): the harness, its load generators,
the servers and the embedded database are all descendants of the harness process; whatever else the
machine ran in the window is the difference. A high "other" figure means the run shared the machine
and its numbers understate what the code can do.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine used (all cores together), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICK


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live (or not yet reaped) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat[1]), (int(stat[11]) + int(stat[12])) / TICK


def harness_tree_seconds() -> float:
    """CPU seconds of this process and every process it started, directly or not, dead or alive.

    Reaped children count through ``RUSAGE_CHILDREN`` (which includes what their own reaped children
    used); live descendants are read from /proc.
    """
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(entry)
            if found is not None:
                parents[int(entry)], seconds[int(entry)] = found
    root = os.getpid()
    for pid in parents:
        p, hops = parents.get(pid), 0
        while p and p != root and hops < 64:
            p, hops = parents.get(p), hops + 1
        if p == root:
            total += seconds[pid]
    return total


@dataclass
class Snapshot:
    at: float
    machine: float
    harness: float

    @classmethod
    def now(cls) -> "Snapshot":
        return cls(time.time(), machine_busy_seconds(), harness_tree_seconds())


def window(first: Snapshot, last: Snapshot) -> dict[str, float]:
    """Machine-wide CPU between two snapshots and the part outside the benchmark, in % of one core."""
    elapsed = max(last.at - first.at, 1e-6)
    machine = last.machine - first.machine
    others = max(0.0, machine - (last.harness - first.harness))
    return {"machine_cpu_percent": round(100 * machine / elapsed, 1),
            "other_cpu_percent": round(100 * others / elapsed, 1)}


def quiet_check(seconds: float = 3.0) -> dict[str, float]:
    """The machine's load before the benchmark starts (nothing of ours is running yet)."""
    first = Snapshot.now()
    time.sleep(seconds)
    return {**window(first, Snapshot.now()), "seconds": seconds, "load_average_1min": os.getloadavg()[0]}
