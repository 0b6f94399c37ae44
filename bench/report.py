"""Writing benchmark results: JSON (all figures), a markdown table, a latency plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def write_report(results: dict[str, Any], machine: dict[str, Any], *, quick: bool, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "mode": "quick" if quick else "full",
                "command": "make bench-quick" if quick else "make bench", "results": results}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = "latest-quick" if quick else "latest"
    for path in (out / f"{name}.json", out / f"{stamp}{'-quick' if quick else ''}.json"):
        path.write_text(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown(document), encoding="utf-8")
    if "direct" in results:
        plot(results["direct"]["runs"], out / f"{name}.png", machine)


def pct(figures: dict[Any, float], p: int) -> float:
    """A percentile from a dict keyed by int (in memory) or str (read back from JSON)."""
    return figures.get(p, figures.get(str(p)))  # type: ignore[return-value]


def pcts(figures: dict[Any, float]) -> str:
    return "/".join(str(pct(figures, p)) for p in (50, 95, 99))


def markdown(doc: dict[str, Any]) -> str:
    m, r = doc["machine"], doc["results"]
    lines = [f"# Xietong benchmark ({doc['mode']})", "",
             f"`{doc['command']}` on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
             f"Linux {m['kernel']}; {m['date']}. Server and load generators share this machine.", ""]
    if "idle" in r:
        i = r["idle"]
        lines += ["## Idle connections", "",
                  "| connections | server RSS before → after | per connection | idle server CPU | connect time |",
                  "|---|---|---|---|---|",
                  f"| {i['connections']:,} | {i['rss_before_mib']} → {i['rss_after_mib']} MiB | "
                  f"{i['kib_per_connection']} KiB | {i['idle_cpu_percent']} % over {i['idle_window_seconds']} s | "
                  f"{i['connect_seconds']} s |", ""]
    if "direct" in r:
        d = r["direct"]
        lines += ["## Direct messages", "",
                  f"{d['pairs']} sender/recipient pairs, each in its own direct chat; open-loop senders. "
                  f"Highest offered rate with p99 send→recipient under 200 ms: "
                  f"**{d['highest_rate_with_p99_under_200ms']}/s**; highest sustained with every message "
                  f"delivered: **{d['max_sustained_per_second']}/s**.", "",
                  "| offered/s | achieved/s | complete | ack p50/p95/p99 ms | delivery p50/p95/p99 ms | "
                  "server CPU | DB CPU | generator CPU | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for run in d["runs"]:
            lines.append(f"| {run['offered_per_second']} | {run['achieved_per_second']} | "
                         f"{run['completeness_percent']} % | {pcts(run['ack_ms'])} | {pcts(run['delivery_ms'])} | "
                         f"{'+'.join(map(str, run['server_cpu_percent']))} % | {run['database_cpu_percent']} % | "
                         f"{run['generator_cpu_percent']} % | {run['errors'] or '—'} |")
        lines.append("")
    if "fanout" in r:
        lines += ["## Group fan-out (all members online)", "",
                  "A burst of messages into a group whose members are all connected; the same number of "
                  "sockets receives the same burst from a bare aiohttp broadcast server (no auth, no "
                  "database) in the same run.", "",
                  "| members | messages | Xietong deliveries/s | send→last member (median / max) | complete | "
                  "bare aiohttp deliveries/s | bare send→last (median / max) |", "|---|---|---|---|---|---|---|"]
        for g in r["fanout"]["groups"]:
            x, b = g["xietong"], g["bare_aiohttp"]
            lines.append(f"| {g['members']:,} | {g['messages']} | {x['deliveries_per_second']:,} | "
                         f"{x.get('send_to_last_member_ms_median')} / {x.get('send_to_last_member_ms_max')} ms | "
                         f"{x.get('completeness_percent')} % | {b['deliveries_per_second']:,} | "
                         f"{b.get('send_to_last_member_ms_median')} / {b.get('send_to_last_member_ms_max')} ms |")
        lines.append("")
    if "storm" in r:
        s = r["storm"]
        lines += ["## Reconnect storm", "",
                  "| devices | back and synced | complete logs | server down | all back after restart |",
                  "|---|---|---|---|---|",
                  f"| {s['devices']:,} | {s['reconnected']:,} | {s['synced_complete']:,} | {s['server_down_seconds']} s | "
                  f"{s['seconds_until_all_back_from_restart_ready']} s |", ""]
    if "scaling" in r:
        s = r["scaling"]
        lines += ["## One process vs two (through Redis)", "",
                  f"Direct messages offered at {s['offered_per_second']}/s; senders on the first process, "
                  "recipients on the last.", "",
                  "| processes | achieved/s | complete | delivery p50/p95/p99 ms | server CPU | DB CPU |",
                  "|---|---|---|---|---|---|"]
        for key in ("1_process", "2_process"):
            run = s[key]
            lines.append(f"| {key[0]} | {run['achieved_per_second']} | {run['completeness_percent']} % | "
                         f"{pcts(run['delivery_ms'])} | {'+'.join(map(str, run['server_cpu_percent']))} % | "
                         f"{run['database_cpu_percent']} % |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path, machine: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the bench extra is not installed: no plot, say so
        path.with_suffix(".txt").write_text("install xietong[bench] for the plot\n")
        return
    offered = [r["offered_per_second"] for r in runs]

    def series(kind: str, p: int) -> list[float]:
        return [pct(r[kind], p) for r in runs]

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(offered, series("delivery_ms", 50), "o-", label="send→recipient p50")
    ax.plot(offered, series("delivery_ms", 99), "o-", label="send→recipient p99")
    ax.plot(offered, series("ack_ms", 99), "s--", label="send→ack p99")
    ax.axhline(200, color="grey", linewidth=0.8, linestyle=":", label="200 ms")
    ax.set_xlabel("offered load (messages/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Xietong direct messages — {machine['cores']} cores, server and load on one machine", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
