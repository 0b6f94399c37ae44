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
    lines += machine_section(m, r)
    if "idle" in r:
        i = r["idle"]
        lines += ["## Idle connections", "",
                  "| connections | server RSS before → after | per connection | idle server CPU | connect time | "
                  "machine CPU (other processes) |",
                  "|---|---|---|---|---|---|",
                  f"| {i['connections']:,} | {i['rss_before_mib']} → {i['rss_after_mib']} MiB | "
                  f"{i['kib_per_connection']} KiB | {i['idle_cpu_percent']} % over {i['idle_window_seconds']} s | "
                  f"{i['connect_seconds']} s | {machine_cpu(i)} |", ""]
    if "direct" in r:
        d = r["direct"]
        lines += ["## Direct messages", "",
                  f"{d['pairs']} sender/recipient pairs, each in its own direct chat; open-loop senders. "
                  f"Highest offered rate with p99 send→recipient under 200 ms: "
                  f"**{d['highest_rate_with_p99_under_200ms']}/s**; highest sustained with every message "
                  f"delivered: **{d['max_sustained_per_second']}/s**.", "",
                  "| offered/s | achieved/s | complete | ack p50/p95/p99 ms | delivery p50/p95/p99 ms | "
                  "server CPU | DB CPU | generator CPU | machine CPU (other processes) | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for run in d["runs"]:
            lines.append(f"| {run['offered_per_second']} | {run['achieved_per_second']} | "
                         f"{run['completeness_percent']} % | {pcts(run['ack_ms'])} | {pcts(run['delivery_ms'])} | "
                         f"{'+'.join(map(str, run['server_cpu_percent']))} % | {run['database_cpu_percent']} % | "
                         f"{run['generator_cpu_percent']} % | {machine_cpu(run)} | {run['errors'] or '—'} |")
        lines.append("")
    if "fanout" in r:
        lines += ["## Group fan-out (all members online)", "",
                  "A burst of messages into a group whose members are all connected; the same number of "
                  "sockets receives the same burst from a bare aiohttp broadcast server (no auth, no "
                  "database) in the same run.", "",
                  "| members | messages | Xietong deliveries/s | send→last member (median / max) | complete | "
                  "bare aiohttp deliveries/s | bare send→last (median / max) | machine CPU (other) Xietong / bare |",
                  "|---|---|---|---|---|---|---|---|"]
        for g in r["fanout"]["groups"]:
            x, b = g["xietong"], g["bare_aiohttp"]
            lines.append(f"| {g['members']:,} | {g['messages']} | {x['deliveries_per_second']:,} | "
                         f"{x.get('send_to_last_member_ms_median')} / {x.get('send_to_last_member_ms_max')} ms | "
                         f"{x.get('completeness_percent')} % | {b['deliveries_per_second']:,} | "
                         f"{b.get('send_to_last_member_ms_median')} / {b.get('send_to_last_member_ms_max')} ms | "
                         f"{machine_cpu(x)} / {machine_cpu(b)} |")
        lines.append("")
    if "storm" in r:
        s = r["storm"]
        lines += ["## Reconnect storm", "",
                  "| devices | back and synced | complete logs | server down | all back after restart | "
                  "machine CPU (other processes) |",
                  "|---|---|---|---|---|---|",
                  f"| {s['devices']:,} | {s['reconnected']:,} | {s['synced_complete']:,} | {s['server_down_seconds']} s | "
                  f"{s['seconds_until_all_back_from_restart_ready']} s | {machine_cpu(s)} |", ""]
    if "scaling" in r:
        s = r["scaling"]
        lines += ["## One process vs two (through Redis)", "",
                  f"Direct messages offered at {s['offered_per_second']}/s; senders on the first process, "
                  "recipients on the last.", "",
                  "| processes | achieved/s | complete | delivery p50/p95/p99 ms | server CPU | DB CPU | "
                  "machine CPU (other processes) |",
                  "|---|---|---|---|---|---|---|"]
        for key in ("1_process", "2_process"):
            run = s[key]
            lines.append(f"| {key[0]} | {run['achieved_per_second']} | {run['completeness_percent']} % | "
                         f"{pcts(run['delivery_ms'])} | {'+'.join(map(str, run['server_cpu_percent']))} % | "
                         f"{run['database_cpu_percent']} % | {machine_cpu(run)} |")
        lines.append("")
    if "meetings" in r:
        lines += ["## Meetings: join → media connected", "",
                  "From sending `meeting.join` to the first decoded video frame from every other participant "
                  "(aiortc peers, VP8, real ICE/DTLS on this machine; the SFU is a private Janus).", "",
                  "| path | participants | meetings | join → media median | worst |", "|---|---|---|---|---|"]
        for name, m in r["meetings"].items():
            if isinstance(m, dict) and "participants" in m:
                lines.append(f"| {name} | {m['participants']} | {m['meetings']} | {m['join_to_media_ms_median']} ms | "
                             f"{m['join_to_media_ms_max']} ms |")
        lines.append("")
    if "synapse" in r:
        lines += side_by_side_section(r["synapse"])
    return "\n".join(lines)


def machine_cpu(figures: dict[str, Any]) -> str:
    """"machine % (other %)": all processes of the machine, and those that are not the benchmark's."""
    if "machine_cpu_percent" not in figures:
        return "—"
    return f"{figures['machine_cpu_percent']} % ({figures['other_cpu_percent']} %)"


def machine_section(m: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """How busy the machine was: before the run, and over each scenario."""
    lines = ["## The machine during the run", "",
             "CPU in % of one core (the machine has "
             f"{m['cores']} cores: {100 * m['cores']} % is all of it). *Machine* counts every process; *other "
             "processes* is the part that no process of the benchmark used (not the harness, its load generators, "
             "the servers or the databases it started): another job on the machine. Every table below carries "
             "the same two figures for its own window; a high *other* figure means that row shared the machine "
             "and understates what the code does alone.", ""]
    before = m.get("before_run")
    if before:
        lines += [f"Before the run (nothing of the benchmark running, {before['seconds']:g} s): machine "
                  f"{before['machine_cpu_percent']} %, load average {before['load_average_1min']:.2f}.", ""]
    rows = [(name, v) for name, v in r.items() if isinstance(v, dict) and "scenario_cpu" in v]
    if rows:
        lines += ["| scenario | seconds | machine CPU | other processes |", "|---|---|---|---|"]
        lines += [f"| {name} | {v['scenario_seconds']} | {v['scenario_cpu']['machine_cpu_percent']} % | "
                  f"{v['scenario_cpu']['other_cpu_percent']} % |" for name, v in rows]
        lines.append("")
    return lines


def side_by_side_section(s: dict[str, Any]) -> list[str]:
    g = s["group"]
    lines = ["## Side by side: Xietong and Synapse", "",
             f"The same machine, the same workloads, one system at a time. Xietong through its WebSocket API; "
             f"Matrix Synapse {s['synapse_version']} (one process) through the client-server API: "
             f"`PUT /rooms/{{room}}/send/m.room.message/{{txnId}}` and `/sync` long-polls (stored filter: room "
             f"timeline messages only, `since` token, timeout {s['sync_timeout_ms']} ms). **direct**: "
             f"{s['pairs']} sender/recipient pairs, each in its own private room, open-loop senders for "
             f"{s['duration_seconds']:g} s per rate, every user online (senders too). **group**: one room of "
             f"{g['members']} members, {g['senders']} of them sending {g['messages_each']} messages each at "
             f"{g['offered_per_second']}/s in total; delivery counted at all {g['members']} members. Synapse stops "
             "at the first rate it cannot keep up with (achieved < 90 % of offered, or messages missing).", "",
             "| system | workload | offered/s | achieved/s | complete | send→ack p50/p99 ms | "
             "send→recipient p50/p99 ms | server CPU | database CPU | generator CPU | other processes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for row in s["rows"]:
        version = f" {s['synapse_version']}" if row["system"] == "Synapse" else ""
        system = f"{row['system']}{version}, {row['database']}"
        db = row["database_cpu_percent"]
        db_cell = (f"{db} %" if db is not None else
                   "in server CPU" if row["database"] == "SQLite" else "not measurable")
        lines.append(f"| {system} | {row['workload']} | {row['offered_per_second']} | {row['achieved_per_second']} | "
                     f"{row['completeness_percent']} % | {pct(row['ack_ms'], 50)} / {pct(row['ack_ms'], 99)} | "
                     f"{pct(row['delivery_ms'], 50)} / {pct(row['delivery_ms'], 99)} | "
                     f"{row['server_cpu_percent']} % | {db_cell} | {row['generator_cpu_percent']} % | "
                     f"{row.get('other_cpu_percent', '—')} % |")
        if row.get("errors"):
            notes.append(f"{system}, {row['workload']} at {row['offered_per_second']}/s: errors {row['errors']}")
        if row.get("timelines_cut_short"):
            notes.append(f"{system}, {row['workload']} at {row['offered_per_second']}/s: "
                         f"{row['timelines_cut_short']} /sync timelines came back `limited` (messages skipped)")
        if "send_to_last_member_ms" in row:
            last = row["send_to_last_member_ms"]
            notes.append(f"{system}, {row['workload']}: send→last member p50/p99 {pct(last, 50)} / {pct(last, 99)} ms")
    for backend, why in s.get("not_run", {}).items():
        notes.append(f"Synapse on {backend}: not run ({why})")
    lines += ["", "CPU is % of one core over the run, from start until every answer and delivery was in (the "
              "machine's cores are shown at the top). Each server is one process, whose Python event loop uses at "
              "most about one core. The PostgreSQL figure is the whole local cluster (postmaster and its "
              "processes); SQLite runs inside Synapse's process; embedded MongoDB is Xietong's database process. "
              "\"Other processes\" is the rest of the machine's CPU over the run (the harness's own process, and "
              "whatever else ran here at the time: a high figure means the run shared the machine). "
              f"Senders wait up to {s['drain_seconds']:g} s for their answers, recipients until nothing more "
              f"arrived for {s['stall_seconds']:g} s: the backlog a server works off counts in its achieved rate.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += ["Synapse settings changed from its defaults:", ""]
    lines += [f"- `{k}`: {v}" for k, v in s["synapse_changed_settings"].items()]
    lines += [f"- `{k}` raised from {v['default']} to {v['set_to']} ({v['why']})"
              for k, v in s["synapse_raised_limits"].items()]
    lines += ["", s["synapse_unchanged"], ""]
    return lines


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
