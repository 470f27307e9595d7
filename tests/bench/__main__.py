"""`make bench`: run the GCL benchmark suite against real gunicorn servers and write tests/bench/results/.

.venv/bin/python -m tests.bench [--quick] [--only NAME[,NAME]] [--duration S] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from tests.bench import plot, report
from tests.bench.ablation import ablation
from tests.bench.fleet import SCENARIOS as FLEET_SCENARIOS
from tests.bench.harness import Backends, cpu_share, loadavg, machine
from tests.bench.scenarios import SCENARIOS, Context

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = {**SCENARIOS, "ablation": ablation}  # SQLite only: the writer it switches off exists there only
# PostgreSQL runs the same scenarios but for the 10 000-limit scale test (SQLite is the targeted default).
PG_SCENARIOS = ("uncontended", "contended", "mixed", "rate", "waiters", *FLEET_SCENARIOS)
# Several nodes on one database, PgBouncer and PostgreSQL's own statistics: PostgreSQL only.
SCENARIOS = {**SCENARIOS, **FLEET_SCENARIOS}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (shorter durations, fewer cycles)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--duration", type=float, default=None, help="seconds per contended run (20; 10 with --quick)")
    parser.add_argument("--rate-duration", type=float, default=None, help="seconds per rate/mixed run (10; 5 quick)")
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated: sqlite,postgresql (default: both, PostgreSQL if available; --quick: sqlite)",
    )
    parser.add_argument("--output", default=str(RESULTS), help="results directory")
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results.json and exit")
    args = parser.parse_args(argv)
    if args.render_only:
        data = json.loads((Path(args.output) / "results.json").read_text())
        (Path(args.output) / "RESULTS.md").write_text(report.markdown(data))
        print(f"wrote {Path(args.output) / 'RESULTS.md'}")
        return 0

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    duration = args.duration or (10.0 if args.quick else 20.0)
    rate_duration = args.rate_duration or (5.0 if args.quick else 10.0)

    started = time.perf_counter()
    data = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": argv,
        "quick": args.quick,
        "machine": machine(),
        "notes": [],
        "runs": {},
    }
    wanted = args.backends or ("sqlite" if args.quick else "sqlite,postgresql")
    data["machine"]["at_start"] = {"loadavg": loadavg(), "cpu_share_of_busy_loop": cpu_share()}
    print(f"machine: {data['machine']}", flush=True)
    backends = Backends([b.strip() for b in wanted.split(",") if b.strip()])
    try:
        available = backends.available()
        if backends.pg_error:
            data["notes"].append(f"PostgreSQL not run: {backends.pg_error}")
            print(f"PostgreSQL not available: {backends.pg_error}", flush=True)
        for backend in available:
            run = data["runs"].setdefault(backend, {})
            for name, fn in SCENARIOS.items():
                if only and name not in only:
                    continue
                if backend != "sqlite" and name not in PG_SCENARIOS:
                    continue
                if backend == "sqlite" and name in FLEET_SCENARIOS:
                    continue
                print(f"[{backend}] {name} ...", flush=True)
                t0 = time.perf_counter()
                load_before, share = os.getloadavg()[0], cpu_share(0.3)
                ctx = Context(backends, backend, args.quick, duration, rate_duration, log=_log)
                try:
                    run[name] = fn(ctx)
                except Exception as exc:  # noqa: BLE001 - one failed scenario must not lose the others
                    traceback.print_exc()
                    run[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                if _saw_errors(run[name]):  # keep the evidence: the server's temporary directory is gone
                    run[name]["server_log_tail"] = backends.last_log
                run[name]["elapsed_s"] = round(time.perf_counter() - t0, 1)
                # Other work on the machine skews every figure: keep the 1-minute load average beside them.
                run[name]["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                run[name]["cpu_share_before"] = share
                print(f"[{backend}] {name} done in {run[name]['elapsed_s']} s", flush=True)
    finally:
        backends.close()
    data["machine"]["at_end"] = {"loadavg": loadavg(), "cpu_share_of_busy_loop": cpu_share()}
    data["elapsed_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "contended-waits.png"
    png.unlink(missing_ok=True)
    why_not = plot.plot(data, png)
    data["plot"] = png.name if why_not is None else None
    if why_not:
        data["notes"].append(f"No plot: {why_not}.")
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "RESULTS.md").write_text(report.markdown(data))
    print(f"wrote {out / 'results.json'} and {out / 'RESULTS.md'} ({data['elapsed_s']} s)")
    misses = [(b, r) for b, run in data["runs"].items() for r in report.targets(run) if r[4] is False]
    for backend, row in misses:
        print(f"  miss [{backend}] {row[0]} ({row[1]}): {row[2]} (target {row[3]})")
    return 0


def _saw_errors(res):
    rows = [res, *res.get("runs", [])]
    return "error" in res or any(r.get("status_5xx") or r.get("client_errors") or r.get("crashes") for r in rows)


def _log(msg):
    print(msg, flush=True)


if __name__ == "__main__":
    sys.exit(main())
