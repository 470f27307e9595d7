"""Who used the CPUs during a run: process trees (PostgreSQL, the nodes, PgBouncer, the clients) from /proc."""

from __future__ import annotations

import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _snapshot():
    """{pid: (ppid, own CPU s, reaped children's CPU s)} for every process on the machine."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # after the name: state ppid ... utime(12th) stime cutime cstime
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK,
                                (int(fields[13]) + int(fields[14])) / TICK)  # fmt: skip
    return out


def _machine_busy():
    """CPU-seconds the whole machine spent busy so far (all CPUs; /proc/stat, idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def _tree(snap, roots):
    children = {}
    for pid, (ppid, _, _) in snap.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [r for r in roots if r]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return seen


class CpuSplit:
    """CPU-seconds per group of process trees between start() and stop().

    groups: {name: callable returning root pids}; a group's trees exclude the trees of the groups before it, so
    `clients` (this process, its client threads and processes) goes last and leaves out the servers it started.
    A process that exits inside the window is counted when its parent (in the same tree) reaps it."""

    def __init__(self, groups):
        self.groups = groups

    def _members(self, snap):
        members, taken = {}, set()
        for name, roots in self.groups.items():
            pids = _tree(snap, roots()) - taken
            members[name] = pids
            taken |= pids
        return members

    def start(self):
        self._t0, self._busy0, self._snap0 = time.perf_counter(), _machine_busy(), _snapshot()
        self._members0 = self._members(self._snap0)
        return self

    def stop(self):
        snap, busy, wall = _snapshot(), _machine_busy(), time.perf_counter() - self._t0
        members = self._members(snap)
        out = {}
        for name in self.groups:
            pids = members[name] | self._members0[name]
            after = sum(snap[p][1] + snap[p][2] for p in pids if p in snap)
            before = sum(self._snap0[p][1] + self._snap0[p][2] for p in pids if p in self._snap0)
            out[name] = round(after - before, 3)
        machine = busy - self._busy0
        out["other"] = round(max(machine - sum(out.values()), 0.0), 3)  # colleagues, the kernel, the bench itself
        return {"wall_s": round(wall, 3), "cpus": len(os.sched_getaffinity(0)), "machine_busy_s": round(machine, 3),
                "cpu_s": out}  # fmt: skip


def per_op(split, ops):
    """CPU milliseconds per operation for each group, and each group's share of the machine's CPUs in the window."""
    if not ops or not split:
        return {}
    capacity = split["wall_s"] * split["cpus"]
    return {
        "cpu_ms_per_op": {k: round(v * 1000 / ops, 3) for k, v in split["cpu_s"].items()},
        "share_of_machine": {k: round(v / capacity, 3) for k, v in split["cpu_s"].items()},
        "idle_share": round(max(capacity - split["machine_busy_s"], 0) / capacity, 3),
    }
