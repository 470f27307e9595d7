"""Before/after: the committed HEAD against an older commit (d082ebd: the tree issue 14 was filed against).

Both sides run from git worktrees of their commits (made under /tmp, removed at the end), with this virtualenv: the
old tree's dependencies are a subset of this one's, and PYTHONPATH puts each tree's gcl_server ahead of the
editable install. Each is started as `make run` starts it (`tests.conftest.Server`: gunicorn with the tree's own
api/gunicorn.conf.py, 2 gthread workers, default settings, a fresh SQLite database per run). The two alternate for
ROUNDS rounds, the order flipping each round, and each run measures the issue's target figures: contended (limit 5,
20 client threads, 10 ms holds, server-side waiting) utilisation and cycles/s, and uncontended acquire+release p50
(one http.client connection). Medians with their spread (max - min over the rounds); the new figure is within the
spread when it differs from the old by no more than the larger of the two spreads.

    .venv/bin/python -m tests.bench.before_after [--old d082ebd] [--new HEAD] [--rounds 6] [--quick]

Writes tests/bench/results/BEFORE_AFTER.md and before_after.json (--output DIR elsewhere). Not part of make test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from tests.bench.ablation import _uncontended_p50_ms
from tests.bench.harness import cpu_share, loadavg, machine, put_limit, unique
from tests.bench.scenarios import analyze, run_threads
from tests.conftest import BIN, ROOT, Server

RESULTS = Path(__file__).resolve().parent / "results"
BENCH_ENV = {"GCL_SWEEP_INTERVAL_SECONDS": "1", "GCL_LEASE_MIN_SECONDS": "60"}  # make run's, as the other scenarios
LIMIT, CLIENTS, HOLD = 5, 20, 0.010
# figure -> (label, format, which way is better)
FIGURES = {
    "utilization": ("contended 10 ms utilisation", "{:.3f}", "higher"),
    "cycles_per_s": ("contended cycles/s", "{:.1f}", "higher"),
    "uncontended_p50_ms": ("uncontended acquire+release p50 ms", "{:.3f}", "lower"),
}


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def worktree(ref):
    """A detached git worktree of `ref` under /tmp, removed afterwards: (its commit, its path)."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = Path(tempfile.gettempdir()) / f"gcl-{commit[:7]}-{int(time.time())}"
    _git("worktree", "add", "--detach", str(path), commit)
    try:
        yield commit, path
    finally:
        _git("worktree", "remove", "--force", str(path))


def _check_imports_from(tree):
    """The server's interpreter, given the tree's PYTHONPATH, must load that tree's gcl_server."""
    env = {"PYTHONPATH": str(tree / "api" / "src"), "PATH": "/usr/bin:/bin"}
    found = subprocess.run(
        [str(BIN / "python"), "-c", "import gcl_server; print(gcl_server.__file__)"],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not found.startswith(str(tree)):
        raise RuntimeError(f"{tree}: the interpreter loads gcl_server from {found}")


@contextlib.contextmanager
def tree_server(tree):
    """A fresh server of the checkout at `tree`, always stopped."""
    with tempfile.TemporaryDirectory(prefix="gcl-bench-") as tmp:
        server = Server(Path(tmp), workers=2, env={**BENCH_ENV, "PYTHONPATH": str(tree / "api" / "src")})
        server.checkout = tree
        try:
            server.start()
            yield server
        finally:
            server.stop()


def _contended(server, duration):
    with requests.Session() as session:
        name = unique("ba-c")
        put_limit(session, server.limits_url, name, LIMIT)
    cfg = {
        "limits_url": server.limits_url,
        "name": name,
        "hold": HOLD,
        "duration": duration,
        "mode": "waiting",
        "occupy": 1,
    }
    results, start_at = run_threads(cfg, CLIENTS)
    return analyze(results, LIMIT, duration, start_at, HOLD)


def _summary(runs):
    out = {}
    for key in FIGURES:
        values = [r[key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}
    out["max_concurrency"] = max(r["max_concurrency"] for r in runs)
    out["status_5xx"] = sum(r["status_5xx"] for r in runs)
    return out


def compare(old, new):
    """Per figure: new - old (medians), the larger spread, and the verdict (the issue's rule); beside it the paired
    view, which load that changes during the run blurs less: each round's new - old (the two ran back to back), its
    median, and in how many rounds new was worse."""
    rows = {}
    for key, (_, _, better) in FIGURES.items():
        diff = new[key]["median"] - old[key]["median"]
        spread = max(old[key]["max"] - old[key]["min"], new[key]["max"] - new[key]["min"])
        if abs(diff) <= spread:
            verdict = "within the spread"
        else:
            worse = diff < 0 if better == "higher" else diff > 0
            verdict = "slower, beyond the spread" if worse else "faster, beyond the spread"
        paired = [b - a for a, b in zip(old[key]["runs"], new[key]["runs"], strict=True)]
        worse_rounds = sum(1 for d in paired if (d < 0 if better == "higher" else d > 0))
        rows[key] = {
            "diff": diff,
            "spread": spread,
            "verdict": verdict,
            "not_slower": "slower" not in verdict,
            "paired_median": statistics.median(paired),
            "rounds_worse": worse_rounds,
            "rounds": len(paired),
        }
    return rows


def measure(trees, rounds, duration, cycles, log=print):
    """Alternate the sides' servers over the rounds (the first side flips each round)."""
    sides = list(trees)
    samples = {side: [] for side in sides}
    for round_no in range(rounds):
        for side in sides if round_no % 2 == 0 else sides[::-1]:
            with tree_server(trees[side]) as server:
                p50 = _uncontended_p50_ms(server, cycles)
                row = _contended(server, duration)
            sample = {
                "uncontended_p50_ms": p50,
                "utilization": row["utilization"],
                "cycles_per_s": row["cycles_per_s"],
                "max_concurrency": row["max_concurrency"],
                "status_5xx": row["status_5xx"],
                "loadavg_1min": round(loadavg()[0], 2),
            }
            samples[side].append(sample)
            log(
                f"  round {round_no + 1} {side:>8}: utilisation {sample['utilization']:.3f}, "
                f"{sample['cycles_per_s']:.1f} cycles/s, uncontended p50 {p50:.3f} ms, load {sample['loadavg_1min']}"
            )
    return samples


def _cell(figure, fmt):
    return f"{fmt.format(figure['median'])} [{fmt.format(figure['min'])}–{fmt.format(figure['max'])}]"


def markdown(data):
    m, old, new = data["machine"], data["old"], data["new"]
    o, n = data["summary"]["old"], data["summary"]["new"]
    lines = [
        f"<!-- written by `{' '.join(['python -m tests.bench.before_after', *data['argv']])}`: do not edit by hand -->",
        f"# Before/after: {new['commit'][:7]} against {old['commit'][:7]}",
        "",
        f"Generated at {data['started']}, total {data['elapsed_s']} s. Old: `{old['ref']}` = {old['commit'][:7]}; "
        f"new: `{new['ref']}` = {new['commit'][:7]} (committed trees, each from its own git worktree).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Python {m['python']}, "
        f"{m['platform']}. Load: 1/5/15-minute load average {m['at_start']['loadavg']} at the start, "
        f"{m['at_end']['loadavg']} at the end; a busy loop got {m['at_start']['cpu_share_of_busy_loop']} / "
        f"{m['at_end']['cpu_share_of_busy_loop']} of a CPU (≈ 1.0 on an otherwise idle machine).",
        "",
        f"{data['rounds']} rounds, old and new alternating (the first flips each round); each run a fresh server "
        "(gunicorn with the tree's own api/gunicorn.conf.py, 2 gthread workers, default settings, a fresh SQLite "
        f"database). Contended: limit {LIMIT}, {CLIENTS} client threads, {HOLD * 1000:g} ms holds, server-side "
        f"waiting, {data['duration_s']:g} s per run; utilisation = grants × {HOLD * 1000:g} ms / ({LIMIT} × run). "
        f"Uncontended: {data['cycles']} acquire+release cycles on one http.client connection. Medians with "
        "[min–max] over the rounds; within the spread: |new − old| ≤ the larger of the two spreads (max − min).",
        "",
        f"| figure | old {old['commit'][:7]} | new {new['commit'][:7]} | new − old | spread | verdict "
        "| paired: median of each round's new − old | rounds new worse |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, (label, fmt, _) in FIGURES.items():
        row = data["comparison"][key]
        lines.append(
            f"| {label} | {_cell(o[key], fmt)} | {_cell(n[key], fmt)} | "
            f"{'+' if row['diff'] >= 0 else '−'}{fmt.format(abs(row['diff']))} | {fmt.format(row['spread'])} | "
            f"{row['verdict']} | "
            f"{'+' if row['paired_median'] >= 0 else '−'}{fmt.format(abs(row['paired_median']))} | "
            f"{row['rounds_worse']} of {row['rounds']} |"
        )
    lines += [
        f"| max concurrency (limit {LIMIT}) | {o['max_concurrency']} | {n['max_concurrency']} | | | | | |",
        f"| 5xx answers | {o['status_5xx']} | {n['status_5xx']} | | | | | |",
        "",
        "Per round (utilisation, cycles/s, uncontended p50 ms, 1-minute load after the run):",
        "",
        "| round | old | new |",
        "|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(data["samples"]["old"], data["samples"]["new"], strict=True)):
        cells = [
            f"{s['utilization']:.3f}, {s['cycles_per_s']:.1f}, {s['uncontended_p50_ms']:.3f}, {s['loadavg_1min']}"
            for s in (a, b)
        ]
        lines.append(f"| {i + 1}{' (old first)' if i % 2 == 0 else ' (new first)'} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m tests.bench.before_after", description=__doc__.split("\n")[0])
    parser.add_argument("--old", default="d082ebd", help="the commit to compare against (d082ebd)")
    parser.add_argument("--new", default="HEAD", help="the commit measured as new (HEAD: what is committed)")
    parser.add_argument("--rounds", type=int, default=None, help="alternations (6; 2 with --quick)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per contended run (10; 3 quick)")
    parser.add_argument("--cycles", type=int, default=None, help="uncontended cycles per run (1000; 200 quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--output", default=str(RESULTS), help="results directory")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 6)
    duration = args.duration or (3.0 if args.quick else 10.0)
    cycles = args.cycles or (200 if args.quick else 1000)
    started = time.perf_counter()
    data = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "argv": argv, "machine": machine()}
    data["machine"]["at_start"] = {"loadavg": loadavg(), "cpu_share_of_busy_loop": cpu_share()}
    print(f"machine: {data['machine']}", flush=True)
    with worktree(args.old) as (old_commit, old_tree), worktree(args.new) as (new_commit, new_tree):
        trees = {"old": old_tree, "new": new_tree}
        for tree in trees.values():
            _check_imports_from(tree)
        print(f"old {args.old} = {old_commit[:7]} in {old_tree}; new {args.new} = {new_commit[:7]} in {new_tree}")
        samples = measure(trees, rounds, duration, cycles, log=lambda line: print(line, flush=True))
    data["machine"]["at_end"] = {"loadavg": loadavg(), "cpu_share_of_busy_loop": cpu_share()}
    data |= {
        "old": {"ref": args.old, "commit": old_commit},
        "new": {"ref": args.new, "commit": new_commit},
        "rounds": rounds,
        "duration_s": duration,
        "cycles": cycles,
        "samples": samples,
        "summary": {side: _summary(runs) for side, runs in samples.items()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    data["comparison"] = compare(data["summary"]["old"], data["summary"]["new"])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "before_after.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "BEFORE_AFTER.md").write_text(markdown(data))
    print(markdown(data))
    print(f"wrote {out / 'BEFORE_AFTER.md'} and {out / 'before_after.json'}")
    return 0 if all(row["not_slower"] for row in data["comparison"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
