"""Ablation: what each accelerator is worth, measured by switching it off in turn (STYLE.md, habit 10).

Each round starts one server per configuration — everything on, then each of the fast path, the lean HTTP layer and
the SQLite writer off — in an order that rotates from round to round, and measures on each: uncontended
acquire+release p50 (one http.client connection) and contended cycles/s (limit 5, 20 client threads, 10 ms holds,
server-side waiting). A layer's gain is the median of "all on" minus the median with it off; it earns its place
only when that gain is larger than the run-to-run spread (max - min) of both medians' rounds.
"""

from __future__ import annotations

import http.client
import statistics

import requests

from tests.bench.harness import percentile, put_limit, unique
from tests.bench.scenarios import _lean_cycles, analyze, run_threads

CONFIGS = {
    "all on": {},
    "fast path off": {"GCL_FAST_PATH": "0"},
    "lean HTTP off": {"GCL_LEAN_HTTP": "0"},
    "SQLite writer off": {"GCL_SQLITE_WRITER": "0"},
}
ROUNDS, QUICK_ROUNDS = 5, 2


def _uncontended_p50_ms(server, cycles):
    with requests.Session() as session:
        name = unique("abl-u")
        put_limit(session, server.limits_url, name, 10)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        times = {"acquire": [], "release": [], "total": []}
        _lean_cycles(conn, name, 50, {"acquire": [], "release": [], "total": []})  # warm-up
        _lean_cycles(conn, name, cycles, times)
    finally:
        conn.close()
    return percentile(times["total"], 50) * 1000


def _contended(server, duration):
    with requests.Session() as session:
        name = unique("abl-c")
        put_limit(session, server.limits_url, name, 5)
    cfg = {
        "limits_url": server.limits_url,
        "name": name,
        "hold": 0.01,
        "duration": duration,
        "mode": "waiting",
        "occupy": 1,
    }
    results, start_at = run_threads(cfg, 20)
    row = analyze(results, 5, duration, start_at, 0.01)
    return row["cycles_per_s"], row["max_concurrency"], row["status_5xx"]


def _spread(values):
    return max(values) - min(values) if values else None


def verdicts(samples):
    """Per configuration: medians, spreads, and each layer's gain against the spread (the keep/remove rule)."""
    out = {}
    base = samples["all on"]
    for config, runs in samples.items():
        row = {}
        for key, better in (("cycles_per_s", "higher"), ("uncontended_p50_ms", "lower")):
            values = [r[key] for r in runs]
            row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}
            if config != "all on":
                base_values = [r[key] for r in base]
                gain = statistics.median(base_values) - statistics.median(values)
                gain = gain if better == "higher" else -gain
                spread = max(_spread(values), _spread(base_values))
                row[key] |= {"gain": gain, "spread": spread, "beats_spread": gain > spread}
        if config != "all on":
            row["keep"] = row["cycles_per_s"]["beats_spread"] or row["uncontended_p50_ms"]["beats_spread"]
        out[config] = row
    return out


def ablation(ctx):
    """Each accelerator switched off in turn, interleaved over rounds (SQLite: where the writer exists)."""
    rounds = QUICK_ROUNDS if ctx.quick else ROUNDS
    duration = min(ctx.duration, 10.0)
    cycles = 300 if ctx.quick else 1000
    configs = list(CONFIGS)
    samples = {config: [] for config in configs}
    for round_no in range(rounds):
        order = configs[round_no % len(configs) :] + configs[: round_no % len(configs)]
        for config in order:
            with ctx.backends.server(ctx.backend, env=CONFIGS[config]) as server:
                p50 = _uncontended_p50_ms(server, cycles)
                cps, max_conc, errors = _contended(server, duration)
            samples[config].append(
                {"uncontended_p50_ms": p50, "cycles_per_s": cps, "max_concurrency": max_conc, "status_5xx": errors}
            )
            ctx.log(f"  round {round_no + 1} {config:18}: {cps:6.1f} cycles/s, uncontended p50 {p50:.3f} ms")
    return {"rounds": rounds, "duration_s": duration, "cycles": cycles, "configs": verdicts(samples)}


def table(res):
    """The ablation as Markdown lines (RESULTS.md and the committed ablation table)."""
    rows = []
    for config, row in res["configs"].items():
        cps, p50 = row["cycles_per_s"], row["uncontended_p50_ms"]
        cells = [config, f"{cps['median']:.1f} [{cps['min']:.1f}–{cps['max']:.1f}]"]
        cells.append(f"{p50['median']:.3f} [{p50['min']:.3f}–{p50['max']:.3f}]")
        if config == "all on":
            cells += ["–", "–", "–"]
        else:
            cells += [
                f"{cps['gain']:+.1f} (spread {cps['spread']:.1f})",
                f"{p50['gain']:+.3f} (spread {p50['spread']:.3f})",
                "**keep**" if row["keep"] else "remove",
            ]
        rows.append("| " + " | ".join(cells) + " |")
    head = [
        f"{res['rounds']} interleaved rounds; contended: limit 5, 20 client threads, 10 ms holds, server-side waiting,"
        f" {res['duration_s']:g} s per run; uncontended: {res['cycles']} acquire+release cycles on one http.client "
        "connection. Medians with [min–max] over the rounds; a gain counts only when larger than the spread.",
        "",
        "| configuration | contended cycles/s | uncontended p50 ms | gain cycles/s | gain p50 ms | verdict |",
        "|---|---|---|---|---|---|",
    ]
    return head + rows
