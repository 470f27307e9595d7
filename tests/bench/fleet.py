"""PostgreSQL fleet scenarios: 1, 2 and 3 nodes on one database (direct and through PgBouncer), the throughput
ceiling, and `pgstats`, the measurement mode (pg_stat_statements, statement log, lock waits, CPU split)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from tests.bench.cpu import CpuSplit, per_op
from tests.bench.harness import LeanSession, percentile, put_limit, unique
from tests.bench.scenarios import analyze, contended_client
from tests.conftest import Server

NODE_COUNTS = (1, 2, 3)
VIAS = ("direct", "pgbouncer")
NODE_ENV = {"GCL_SWEEP_INTERVAL_SECONDS": "1", "GCL_LEASE_MIN_SECONDS": "60"}  # make run's settings
PGBOUNCER_POOL = 20  # server connections PgBouncer keeps per database


# =================================================================================================== servers


@contextlib.contextmanager
def pgbouncer(cluster):
    from tests import pg

    bouncer = pg.PgBouncer(cluster, pool_mode="transaction", pool_size=PGBOUNCER_POOL).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@contextlib.contextmanager
def nodes(cluster, count, bouncer=None, env=None):
    """`count` gunicorn nodes (2 gthread workers each, make run's settings) on one fresh database."""
    url = cluster.create_database()
    servers = []
    with tempfile.TemporaryDirectory(prefix="gcl-fleet-") as tmp:
        try:
            for i in range(count):
                # Requests through PgBouncer; the wake-up listener needs a session: straight to PostgreSQL.
                node_url = f"{bouncer.url(url)}?listen_port={cluster.port}" if bouncer else url
                server = Server(Path(tmp) / f"node{i}", workers=2, env={**NODE_ENV, **(env or {})},
                                database_url=node_url)  # fmt: skip
                servers.append(server)
                server.start()
            yield servers
        finally:
            for server in servers:
                server.stop()
            with contextlib.suppress(Exception):
                cluster.release_database(url)


def cpu_groups(cluster, servers, bouncer=None):
    """PostgreSQL, PgBouncer, the nodes, then the clients (this process and its client processes)."""
    return CpuSplit(
        {
            "postgresql": lambda: [cluster.postmaster_pid],
            "pgbouncer": lambda: [bouncer.proc.pid] if bouncer and bouncer.proc else [],
            "nodes": lambda: [s.proc.pid for s in servers if s.proc],
            "clients": lambda: [os.getpid()],
        }
    )


# =================================================================================================== contended


def contended_over(servers, duration, clients=20, limit=5, hold=0.01, mode="waiting", split=None):
    """Limit 5, 20 client threads (LeanSession) spread round robin over the nodes, 10 ms holds; analyze()d.
    split: a CpuSplit, started at the go and stopped when the clients are done (its figures in out["cpu"])."""
    urls = [s.limits_url for s in servers]
    name = unique("fleet")
    with requests.Session() as s:
        put_limit(s, urls[0], name, limit)
    cfg = {"name": name, "occupy": 1, "hold": hold, "duration": duration, "mode": mode}
    ready, go, box, out = threading.Semaphore(0), threading.Event(), {}, [None] * clients

    def client(index):
        try:
            mine = {**cfg, "limits_url": urls[index % len(urls)]}
            session = LeanSession(mine["limits_url"])
            session.get(mine["limits_url"].rsplit("/v2/", 1)[0] + "/health", timeout=30)
            ready.release()
            go.wait()
            out[index] = contended_client(mine, index, box["start_at"], session)
        except Exception as exc:  # noqa: BLE001 - reported
            ready.release()
            out[index] = {"index": index, "crash": repr(exc)}

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for _ in range(clients):
        ready.acquire()
    box["start_at"] = time.monotonic() + 0.2
    if split:
        split.start()
    go.set()
    for t in threads:
        t.join()
    cpu = split.stop() if split else None
    return analyze(out, limit, duration, box["start_at"], hold) | {"cpu": cpu}


KEEP = ("cycles_per_s", "utilization", "server_handoff_p50_ms", "server_handoff_p99_ms", "handoff_p50_ms",
        "wait_p50_ms", "wait_p99_ms", "wait_p99_over_p50", "jain", "per_client_min_over_max", "max_concurrency",
        "requests_per_grant", "status_5xx", "client_errors", "crashes")  # fmt: skip


def fleet_contended(ctx):
    """Contended limit (5 slots, 20 clients, 10 ms holds, server-side waiting) on 1, 2, 3 nodes, direct and via
    PgBouncer in transaction mode; the CPU split of each run."""
    cluster = ctx.backends._pg()
    out = {"limit": 5, "clients": 20, "hold_ms": 10, "duration_s": ctx.duration, "runs": []}
    for via in VIAS:
        with contextlib.ExitStack() as stack:
            bouncer = stack.enter_context(pgbouncer(cluster)) if via == "pgbouncer" else None
            for count in NODE_COUNTS:
                with nodes(cluster, count, bouncer) as servers:
                    res = contended_over(servers, ctx.duration, split=cpu_groups(cluster, servers, bouncer))
                    cpu = res["cpu"]
                    row = {"via": via, "nodes": count} | {k: res[k] for k in KEEP}
                    row["cpu"] = cpu | per_op(cpu, res["grants"])
                    out["runs"].append(row)
                    ctx.log(
                        f"  {via:9} {count} node(s): {row['cycles_per_s']} cycles/s, util {row['utilization']}, "
                        f"hand-off p50/p99 {row['server_handoff_p50_ms']}/{row['server_handoff_p99_ms']} ms, "
                        f"Jain {row['jain']}, min/max {row['per_client_min_over_max']}, max conc "
                        f"{row['max_concurrency']}, 5xx {row['status_5xx']}, CPU ms/cycle {row['cpu']['cpu_ms_per_op']}"
                    )
    return out


# =================================================================================================== ceiling


def _ceiling_process(urls, names, first, threads, duration, ready, go, start_value, results):
    """One client process: `threads` threads, each cycling acquire+release on its own limit, no hold."""
    counts, lats, fails = [0] * threads, [[] for _ in range(threads)], []

    def run(t):
        index = first + t
        url, name = urls[index % len(urls)], names[index % len(names)]
        acquire = {"names": [name], "slots": 1, "lease_duration": 60}
        with LeanSession(url) as session:
            session.get(url.rsplit("/v2/", 1)[0] + "/health", timeout=30)
            barrier.wait()
            go.wait()  # the start instant is set before go
            deadline = start_value.value + duration
            time.sleep(max(0.0, start_value.value - time.monotonic()))
            while (t0 := time.monotonic()) < deadline:
                try:
                    got = session.post(f"{url}/increment-with-lease", json=acquire, timeout=60)
                    if got.status_code != 200:
                        fails.append(got.status_code)
                        time.sleep(0.01)
                        continue
                    done = session.post(f"{url}/decrement-with-lease", json={"lease_id": got.json()["lease_id"]})
                    if done.status_code != 204:
                        fails.append(done.status_code)
                except requests.RequestException as exc:
                    fails.append(type(exc).__name__)
                    continue
                t1 = time.monotonic()
                if t1 <= deadline:
                    counts[t] += 1
                    lats[t].append(t1 - t0)

    barrier = threading.Barrier(threads + 1)
    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    ready.put(first)
    go.wait()
    cpu0 = time.process_time()
    for thread in pool:
        thread.join()
    results.put({"cycles": sum(counts), "lat": [x for xs in lats for x in xs], "fails": fails,
                 "cpu_s": time.process_time() - cpu0})  # fmt: skip


def ceiling_over(servers, duration, processes, threads, limits=100, split=None):
    """acquire+release cycles/s across `limits` independent limits, processes × threads clients round robin."""
    urls = [s.limits_url for s in servers]
    prefix = unique("ceiling")
    names = [f"{prefix}-{i:03d}" for i in range(limits)]
    with requests.Session() as s:
        for name in names:
            put_limit(s, urls[0], name, 5)
    ctx = multiprocessing.get_context("spawn")
    ready, results, go, start_value = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=_ceiling_process,
                    args=(urls, names, p * threads, threads, duration, ready, go, start_value, results))
        for p in range(processes)
    ]  # fmt: skip
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        start_value.value = time.monotonic() + 0.2
        if split:
            split.start()
        go.set()
        out = [results.get(timeout=duration + 120) for _ in procs]
        cpu = split.stop() if split else None
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    lats = [x for r in out for x in r["lat"]]
    cycles = sum(r["cycles"] for r in out)
    fails = [f for r in out for f in r["fails"]]
    return {
        "clients": processes * threads,
        "limits": limits,
        "cycles": cycles,
        "cycles_per_s": round(cycles / duration, 1),
        "cycle_p50_ms": round(percentile(lats, 50) * 1000, 3) if lats else None,
        "cycle_p99_ms": round(percentile(lats, 99) * 1000, 3) if lats else None,
        "failures": len(fails),
        "failure_samples": [str(f) for f in fails[:5]],
        "status_5xx": sum(1 for f in fails if isinstance(f, int) and f >= 500),
        "client_process_cpu_s": round(sum(r["cpu_s"] for r in out), 3),
        "cpu": cpu,
    }


def ceiling(ctx):
    """The throughput ceiling: acquire+release cycles/s across 100 independent limits, enough clients to saturate
    (32: 4 processes × 8 threads; 16 quick), on 1, 2, 3 nodes, direct and through PgBouncer (transaction mode)."""
    cluster = ctx.backends._pg()
    processes, threads = (2, 8) if ctx.quick else (4, 8)
    duration = ctx.rate_duration
    out = {"limits": 100, "clients": processes * threads, "duration_s": duration, "runs": []}
    for via in VIAS:
        with contextlib.ExitStack() as stack:
            bouncer = stack.enter_context(pgbouncer(cluster)) if via == "pgbouncer" else None
            for count in NODE_COUNTS:
                with nodes(cluster, count, bouncer) as servers:
                    split = cpu_groups(cluster, servers, bouncer)
                    res = ceiling_over(servers, duration, processes, threads, split=split)
                    cpu = res.pop("cpu")
                    row = {"via": via, "nodes": count} | res
                    row["cpu"] = cpu | per_op(cpu, res["cycles"])
                    out["runs"].append(row)
                    ctx.log(
                        f"  {via:9} {count} node(s): {row['cycles_per_s']} cycles/s (p50 {row['cycle_p50_ms']} ms), "
                        f"failures {row['failures']}, CPU ms/cycle {row['cpu']['cpu_ms_per_op']}, "
                        f"share {row['cpu']['share_of_machine']}"
                    )
    base = {r["via"]: r["cycles_per_s"] for r in out["runs"] if r["nodes"] == 1}
    for r in out["runs"]:
        r["over_1_node"] = round(r["cycles_per_s"] / base[r["via"]], 3) if base.get(r["via"]) else None
    return out


# =================================================================================================== measurement


PREFIX = r"^\S+ \S+ \S+ \[(\d+)\] (\S*) "  # log_line_prefix '%m [%p] %d ': time, [pid], database
STATEMENT = re.compile(PREFIX + r"LOG:  statement: (.*)$")
WAITING = re.compile(PREFIX + r"LOG:  process \d+ still waiting for (\S+) on (.+?) after ([\d.]+) ms")
ACQUIRED = re.compile(PREFIX + r"LOG:  process \d+ acquired (\S+) on (.+?) after ([\d.]+) ms")
WAIT_STATEMENT = re.compile(PREFIX + r"STATEMENT:  (.*)$")
DURATION = re.compile(PREFIX + r"LOG:  duration: ([\d.]+) ms")  # log_min_duration_statement (5 ms)


def _log_time(line):
    """The log line's timestamp (log_line_prefix %m: 'YYYY-MM-DD HH:MM:SS.mmm TZ'), as epoch seconds."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def _pct(values, q):
    return round(percentile(values, q), 3) if values else None


def _mean(values):
    return round(sum(values) / len(values), 3) if values else None


def _shorten(query, n=110):
    return re.sub(r"\s+", " ", query).strip()[:n]


class Phase:
    """One measured phase: pg_stat_statements reset before, log offset, pg_stat_database counters, CPU split."""

    def __init__(self, cluster, dbname, split):
        self.cluster, self.dbname, self.split = cluster, dbname, split

    def _db_counters(self):
        row = self.cluster.query(
            "SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database WHERE datname = %s", (self.dbname,)
        )[0]
        return dict(zip(("xact_commit", "xact_rollback", "deadlocks"), row, strict=True))

    def __enter__(self):
        time.sleep(1.2)  # backends flush their statistics after ~1 s idle: let the previous phase's land
        self.counters0 = self._db_counters()
        self.cluster.query("SELECT pg_stat_statements_reset()", fetch=False)
        self.log_offset = self.cluster.log_path.stat().st_size
        self.split.start()
        return self

    def __exit__(self, *exc):
        self.cpu = self.split.stop()
        self.statements = self.cluster.query(
            "SELECT s.query, s.calls, s.total_exec_time, s.rows, s.total_plan_time FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s "
            "ORDER BY s.total_exec_time + s.total_plan_time DESC",
            (self.dbname,),
        )
        with open(self.cluster.log_path, errors="replace") as f:
            f.seek(self.log_offset)
            self.log = f.read()
        time.sleep(1.2)
        counters = self._db_counters()
        self.counters = {k: counters[k] - self.counters0[k] for k in counters}

    def report(self, ops):
        sent = [m for m in map(STATEMENT.match, self.log.splitlines()) if m and m.group(2) == self.dbname]
        waits, acquired, waited_statements, slow = [], [], {}, []
        lines = self.log.splitlines()
        for i, line in enumerate(lines):
            if (m := WAITING.match(line)) and m.group(2) == self.dbname:
                waits.append(f"{m.group(3)} on {re.sub(r'[0-9]+', 'N', m.group(4))}")
                for later in lines[i + 1 : i + 6]:
                    if (s := WAIT_STATEMENT.match(later)) and s.group(1) == m.group(1):
                        key = _shorten(s.group(3), 90)
                        waited_statements[key] = waited_statements.get(key, 0) + 1
                        break
            elif (m := ACQUIRED.match(line)) and m.group(2) == self.dbname:
                acquired.append(float(m.group(5)))
            elif (m := DURATION.match(line)) and m.group(2) == self.dbname:
                slow.append(float(m.group(3)))
        kinds, in_tx, commits, implicit = {}, {}, 0, 0
        tx_ms, hold_ms, tx_round_trips = [], [], []
        events = (STATEMENT.match(line) or ACQUIRED.match(line) for line in lines)
        events = [m for m in events if m and m.group(2) == self.dbname]
        for m in events:  # a statement sent outside BEGIN ... COMMIT is a transaction (and a commit) of its own
            if m.re is ACQUIRED:  # a lock this backend waited for is granted now: the row is held from here
                tx = in_tx.get(m.group(1))
                if tx is not None and tx["locked"] is not None:
                    tx["locked"] = _log_time(m.string)
                continue
            text = m.group(3)
            # One round trip may carry several statements (the engine sends BEGIN with its first statement and
            # COMMIT with its last writes): it opens a transaction if its first is BEGIN, ends one if its last is
            # COMMIT or ROLLBACK, and is labelled by its first.
            words = [part.split(None, 1)[0].upper() for part in text.split(";") if part.strip()] or ["?"]
            word, last = words[0], words[-1]
            kinds[word] = kinds.get(word, 0) + 1
            pid, at = m.group(1), _log_time(m.string)
            if word in ("BEGIN", "START"):
                in_tx[pid] = {"begin": at, "locked": None, "round_trips": 0}
            elif pid not in in_tx and last not in ("COMMIT", "END", "ROLLBACK", "ABORT"):
                implicit += 1
                continue
            tx = in_tx.get(pid)
            if tx is not None:
                tx["round_trips"] += 1
                locks = "concurrency_limit" in text and (
                    "FOR UPDATE" in text or re.search(r"(^|;)\s*UPDATE concurrency_limit", text) is not None
                )
                if locks and tx["locked"] is None:
                    tx["locked"] = at
            if last in ("COMMIT", "END", "ROLLBACK", "ABORT"):
                tx = in_tx.pop(pid, None)
                commits += last in ("COMMIT", "END")
                if tx is not None:  # from BEGIN (and from taking a limit's row lock) to the COMMIT arriving
                    tx_ms.append((at - tx["begin"]) * 1000)
                    tx_round_trips.append(tx["round_trips"])
                    if tx["locked"] is not None:
                        hold_ms.append((at - tx["locked"]) * 1000)
        calls = sum(r[1] for r in self.statements)
        exec_ms = sum(r[2] for r in self.statements)
        plan_ms = sum(r[4] or 0 for r in self.statements)
        per = (lambda v: round(v / ops, 3)) if ops else (lambda v: None)
        wait_kinds = {}
        for w in waits:
            wait_kinds[w] = wait_kinds.get(w, 0) + 1
        return (
            {
                "ops": ops,
                "round_trips_per_op": per(len(sent)) if sent else None,  # None: the statement log was off
                "round_trips_by_first_word_per_op": {
                    k: per(v) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
                },
                "statements_per_op": per(calls),
                "db_exec_ms_per_op": per(exec_ms),
                "db_plan_ms_per_op": per(plan_ms),
                "commits_per_op": per(commits + implicit) if sent else None,  # from the statement log
                "implicit_transactions_per_op": per(implicit) if sent else None,
                # the statement log's clock: whole milliseconds (log_line_prefix %m)
                "transaction_ms_p50": _pct(tx_ms, 50),
                "transaction_ms_p99": _pct(tx_ms, 99),
                "round_trips_per_transaction": _mean(tx_round_trips),
                "limit_row_held_ms_p50": _pct(hold_ms, 50),
                "limit_row_held_ms_p99": _pct(hold_ms, 99),
                "limit_row_held_ms_mean": _mean(hold_ms),
                "xact_commit_per_op_pg_stat_database": per(self.counters["xact_commit"]),  # lags (flushed when idle)
                "rollbacks_per_op": per(self.counters["xact_rollback"]),
                "deadlocks": self.counters["deadlocks"],
                "lock_waits_over_1ms": len(waits),
                "lock_waits_over_1ms_per_op": per(len(waits)),
                "lock_wait_ms_p50": round(percentile(acquired, 50), 3) if acquired else None,
                "lock_wait_ms_p99": round(percentile(acquired, 99), 3) if acquired else None,
                "lock_wait_ms_total_per_op": per(sum(acquired)),
                "lock_waits_by_kind": wait_kinds,
                "statements_over_5ms_per_op": per(len(slow)),
                "slowest_statement_ms": max(slow, default=None),
                "statements_that_waited": dict(sorted(waited_statements.items(), key=lambda kv: -kv[1])[:6]),
                "top_statements": [  # by time (planning + execution)
                    {
                        "calls_per_op": per(c),
                        "mean_ms": round(t / c, 4) if c else None,
                        "plan_ms": round(p / c, 4) if c else None,
                        "query": _shorten(q),
                    }
                    for q, c, t, _, p in self.statements[:14]
                ],
            }
            | per_op(self.cpu, ops)
            | {"cpu": self.cpu}
        )


def _log_statements(cluster, on):
    cluster.query(f"ALTER SYSTEM SET log_statement = '{'all' if on else 'none'}'", fetch=False)
    cluster.query("SELECT pg_reload_conf()")
    time.sleep(0.3)  # backends re-read the configuration before their next command


def pgstats(ctx):
    """Measurement mode: where an acquire and a release spend their time on PostgreSQL (its own cluster, with
    pg_stat_statements, log_statement and log_lock_waits at deadlock_timeout 1 ms; 1 node, 2 workers)."""
    from tests import pg

    n = 200 if ctx.quick else 1000
    contended_s = min(ctx.duration, 5.0 if ctx.quick else 10.0)
    cluster = pg.PostgresCluster(settings=pg.MEASURE_SETTINGS).start()
    out = {"settings": pg.MEASURE_SETTINGS, "acquires": n, "contended_s": contended_s}
    try:
        cluster.query("CREATE EXTENSION pg_stat_statements", fetch=False)
        # A slow sweeper: its statements (every 1 s per worker) would blur the per-request counts.
        with nodes(cluster, 1, env={"GCL_SWEEP_INTERVAL_SECONDS": "60"}) as servers:
            server = servers[0]
            dbname = server.database_url.rsplit("/", 1)[-1]
            split = cpu_groups(cluster, servers)
            name = unique("pgstats")
            with requests.Session() as s:
                put_limit(s, server.limits_url, name, 10 * n)
            session = LeanSession(server.limits_url)
            body = {"names": [name], "slots": 1, "lease_duration": 60}
            for _ in range(20):  # warm: pooled connections open, caches filled
                got = session.post(f"{server.limits_url}/increment-with-lease", json=body)
                if got.status_code != 200:
                    raise RuntimeError(f"acquire: {got.status_code} {got.text[:300]}")
                session.post(f"{server.limits_url}/decrement-with-lease", json={"lease_id": got.json()["lease_id"]})
            _log_statements(cluster, True)
            leases = []
            with Phase(cluster, dbname, split) as acquire:
                for _ in range(n):
                    leases.append(session.post(f"{server.limits_url}/increment-with-lease", json=body).json())
            with Phase(cluster, dbname, split) as release:
                for lease in leases:
                    session.post(f"{server.limits_url}/decrement-with-lease", json={"lease_id": lease["lease_id"]})
            out["acquire"] = acquire.report(n)
            out["release"] = release.report(n)
            session.close()
            with Phase(cluster, dbname, split) as logged:
                res = contended_over(servers, contended_s)
            out["contended_logged"] = logged.report(res["grants"]) | {"run": {k: res[k] for k in KEEP}}
            _log_statements(cluster, False)
            with Phase(cluster, dbname, split) as quiet:
                res = contended_over(servers, contended_s)
            out["contended"] = quiet.report(res["grants"]) | {"run": {k: res[k] for k in KEEP}}
        for key in ("acquire", "release", "contended_logged", "contended"):
            r = out[key]
            ctx.log(
                f"  {key}: round trips/op {r['round_trips_per_op']} {r['round_trips_by_first_word_per_op']}, "
                f"statements/op {r['statements_per_op']}, commits/op {r['commits_per_op']}, db exec ms/op "
                f"{r['db_exec_ms_per_op']}, lock waits>1ms/op {r['lock_waits_over_1ms_per_op']} "
                f"(p50 {r['lock_wait_ms_p50']} ms), CPU ms/op {r.get('cpu_ms_per_op')}"
            )
    finally:
        cluster.stop()
    return out


SCENARIOS = {"pgstats": pgstats, "fleet": fleet_contended, "ceiling": ceiling}


# =================================================================================================== report


def _row(what, scope, value, op, bound, info=False):
    if value is None:
        return (what, scope, None, f"{op} {bound}", None)
    ok = value >= bound if op == "≥" else value <= bound
    return (what, scope, value, f"{op} {bound}", ("info: " + ("met" if ok else "not met")) if info else ok)


def targets(run):
    """Issue 18's targets for the fleet scenarios, as report.targets() rows."""
    rows = []
    f = run.get("fleet")
    if f and "runs" in f:
        for r in f["runs"]:
            scope = f"{r['nodes']} node(s), {r['via']}"
            rows.append(_row("fleet contended utilisation", scope, r["utilization"], "≥", 0.70))
            rows.append(_row("fleet hand-off p50 inside the server (ms)", scope, r["server_handoff_p50_ms"], "≤", 2))
            rows.append(_row("fleet hand-off p99 inside the server (ms)", scope, r["server_handoff_p99_ms"], "≤", 10))
            rows.append(_row("fleet wait p99 / p50", scope, r["wait_p99_over_p50"], "≤", 1.5))
            rows.append(_row("fleet Jain fairness", scope, r["jain"], "≥", 0.99))
        rows.append(_row("fleet max concurrency (all runs)", "limit 5", max(r["max_concurrency"] for r in f["runs"]),
                         "≤", 5))  # fmt: skip
        rows.append(_row("fleet 5xx (all runs)", "contended", sum(r["status_5xx"] for r in f["runs"]), "≤", 0))
    c = run.get("ceiling")
    if c and "runs" in c:
        for r in c["runs"]:
            if r["nodes"] == 2:  # "where the CPU allows it": the split is in the details
                rows.append(_row("ceiling 2 nodes ÷ 1 node", r["via"], r["over_1_node"], "≥", 1.3, info=True))
        rows.append(_row("ceiling failures (all runs)", "acquire+release", sum(r["failures"] for r in c["runs"]),
                         "≤", 0))  # fmt: skip
    return rows


def _cpu_cells(cpu):
    per = (cpu or {}).get("cpu_ms_per_op", {})
    return [per.get(k) for k in ("postgresql", "pgbouncer", "nodes", "clients", "other")] + [
        (cpu or {}).get("idle_share")
    ]


CPU_HEADERS = ["CPU ms PostgreSQL", "PgBouncer", "nodes", "clients", "other", "idle share"]


def _table(headers, rows):
    fmt = lambda v: "–" if v is None else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows])


def details(name, res):
    """RESULTS.md lines for a fleet scenario."""
    if name == "fleet":
        keys = ["via", "nodes", "cycles_per_s", "utilization", "server_handoff_p50_ms", "server_handoff_p99_ms",
                "handoff_p50_ms", "wait_p50_ms", "wait_p99_ms", "wait_p99_over_p50", "jain",
                "per_client_min_over_max", "max_concurrency", "requests_per_grant", "status_5xx"]  # fmt: skip
        return [
            f"Limit {res['limit']}, {res['clients']} client threads spread round robin over the nodes, "
            f"{res['hold_ms']} ms holds, server-side waiting, {res['duration_s']} s per run; each node 2 gthread "
            f"workers; PgBouncer in transaction mode ({PGBOUNCER_POOL} server connections), the nodes' wake-up "
            "listener straight to PostgreSQL (`?listen_port=`). CPU = CPU-ms per grant of each process tree in the "
            "window; other = the rest of the machine (colleagues, kernel); idle share = unused CPU.",
            "",
            _table(keys + CPU_HEADERS, [[r.get(k) for k in keys] + _cpu_cells(r.get("cpu")) for r in res["runs"]]),
        ]
    if name == "ceiling":
        keys = ["via", "nodes", "clients", "cycles_per_s", "over_1_node", "cycle_p50_ms", "cycle_p99_ms", "failures"]
        return [
            f"acquire+release cycles/s across {res['limits']} independent limits, no hold, {res['clients']} clients "
            f"(processes × threads, raw http.client) spread round robin over the nodes, {res['duration_s']} s per "
            "run. CPU = CPU-ms per cycle of each process tree.",
            "",
            _table(keys + CPU_HEADERS, [[r.get(k) for k in keys] + _cpu_cells(r.get("cpu")) for r in res["runs"]]),
        ]
    if name == "pgstats":
        keys = ["round_trips_per_op", "statements_per_op", "commits_per_op", "round_trips_per_transaction",
                "transaction_ms_p50", "limit_row_held_ms_p50", "limit_row_held_ms_p99", "db_exec_ms_per_op",
                "db_plan_ms_per_op", "lock_waits_over_1ms_per_op", "lock_wait_ms_p50", "lock_wait_ms_p99",
                "lock_wait_ms_total_per_op"]  # fmt: skip
        phases = [("acquire", "per acquire"), ("release", "per release"),
                  ("contended_logged", "per contended cycle (statement log on)"),
                  ("contended", "per contended cycle (statement log off)")]  # fmt: skip
        lines = [
            f"Own cluster with {', '.join(f'{k}={v}' for k, v in res['settings'].items())}; 1 node (2 workers), "
            f"{res['acquires']} acquires then as many releases by one client, then limit 5 / 20 clients / 10 ms "
            f"holds for {res['contended_s']} s. Round trips = simple-protocol queries in the statement log; "
            "statements = pg_stat_statements calls (foreign-key checks included); lock waits = waits past "
            "deadlock_timeout (1 ms) in the log.",
            "",
            _table(["phase", *keys, *CPU_HEADERS],
                   [[label] + [res[k].get(c) for c in keys] + _cpu_cells(res[k]) for k, label in phases if k in res]),
        ]  # fmt: skip
        for key in ("contended", "acquire", "release"):
            if key in res:
                top = res[key]["top_statements"]
                lines += ["", f"Top statements by time, {key} (calls per op × mean ms executing + planning):", ""]
                lines += [f"- {s['calls_per_op']} × {s['mean_ms']} + {s.get('plan_ms')} ms `{s['query']}`" for s in top]
        if "contended" in res:
            lines += ["", f"Lock waits (contended): {res['contended']['lock_waits_by_kind']}; statements that "
                      f"waited: {res['contended']['statements_that_waited']}"]  # fmt: skip
        return lines
    return None
