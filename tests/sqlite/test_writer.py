"""SQLite's writer process (gcl_server/sqlite/writer.py): batches keep each call's own outcome, and workers carry on
without it, on the same write lock, when it is gone."""

import fcntl
import os
import signal
import subprocess
import threading
import time

import pytest
import requests


@pytest.fixture
def engine(tmp_path):
    """The engine in this process on a fresh SQLite file (no gunicorn, so no writer: calls run here)."""
    from tests.conftest import migrated_app

    app = migrated_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'gcl.db'}", "SWEEPER": False})
    with app.app_context():
        yield app


def _call(fn, *args, **kwargs):
    return (fn.__module__, fn.__qualname__, args, kwargs)


def test_a_batch_commits_each_call_or_rolls_back_only_the_one_that_failed(engine):
    from gcl_server.errors import Conflict
    from gcl_server.services import limits, slots
    from gcl_server.sqlite import writer

    batch = [
        ("a", _call(limits.create, {"name": "first", "limit": 2})),
        ("b", _call(limits.create, {"name": "first", "limit": 9})),  # a name taken (by the call before it)
        ("c", _call(limits.create, {"name": "second", "limit": 3})),
    ]
    results, _ = writer._run_batch(batch)
    assert [conn for conn, _ in results] == ["a", "b", "c"]
    assert results[0][1][0] is True and results[2][1][0] is True
    assert results[1][1][0] is False and isinstance(results[1][1][1], Conflict)
    assert {(r.name, r.limit) for r in limits.list_limits()} == {("first", 2), ("second", 3)}

    # Alone, a call is the transaction: its failure leaves nothing behind either.
    results, callbacks = writer._run_batch([("d", _call(limits.create, {"name": "second", "limit": 1}))])
    assert results[0][1][0] is False and isinstance(results[0][1][1], Conflict) and callbacks == []
    assert {(r.name, r.limit) for r in limits.list_limits()} == {("first", 2), ("second", 3)}

    # Nested transactional calls join the batch's transaction; what they queue for after the commit is returned.
    held = slots.acquire(slots.AcquireRequest(["first"], 1, lease_seconds=60))
    results, _ = writer._run_batch([("e", _call(slots.release, held.lease_id))])
    [(conn, (ok, value, events))] = results
    assert (conn, ok, value) == ("e", True, True)
    # The events it committed go back to the worker that sent the call (emitted there, events.py).
    assert [(kind, fields["lease_id"], fields["name"]) for kind, fields in events] == [
        ("released", held.lease_id, "first")
    ]


def test_the_writer_runs_only_gcl_functions(engine):
    from gcl_server.sqlite import writer

    results, _ = writer._run_batch([("x", ("os", "system", ("true",), {}))])
    assert results[0][1][0] is False and "not a GCL function" in str(results[0][1][1])


def test_a_write_that_would_wait_for_the_lock_goes_to_the_writer_or_runs_here_without_it(engine, monkeypatch):
    """A real writer process on the engine's database: a transactional call that finds the lock taken is run by the
    writer; once the writer is gone, the same call is not delivered and runs in this process."""
    from gcl_server import tx
    from gcl_server.database import db
    from gcl_server.services import limits
    from gcl_server.sqlite import writer

    monkeypatch.setenv("DATABASE_URL", engine.config["DATABASE_URL"])
    proc = writer.start()  # as the gunicorn master does before it forks the workers
    assert proc is not None
    tx.use_runner(writer.Client(proc.path))  # as each worker does once it loaded the app
    try:
        monkeypatch.setattr(db.obj.dialect, "try_write_lock", lambda: False)  # as if another writer held it
        outcomes = []
        call = writer.Client.call

        def spy(self, fn, args, kwargs):
            try:
                value = call(self, fn, args, kwargs)
            except tx.Undelivered:
                outcomes.append("unreachable")
                raise
            outcomes.append("writer")
            return value

        monkeypatch.setattr(writer.Client, "call", spy)
        assert limits.create({"name": "by-writer", "limit": 1}).name == "by-writer"
        proc.proc.kill()
        proc.proc.wait(timeout=10)
        assert limits.create({"name": "here", "limit": 2}).name == "here"
        assert outcomes == ["writer", "unreachable"]
        assert {(r.name, r.limit) for r in limits.list_limits()} == {("by-writer", 1), ("here", 2)}
    finally:
        tx.use_runner(None)
        proc.stop()


def _writer_pid(server):
    out = subprocess.run(["ps", "--ppid", str(server.proc.pid), "-o", "pid=,args="], capture_output=True, text=True)
    pids = [int(line.split()[0]) for line in out.stdout.splitlines() if "gcl_server.sqlite.writer" in line]
    assert len(pids) == 1, out.stdout
    return pids[0]


def _alive(pid):
    """False once every thread of the process has exited. The main thread of a killed process turns zombie while
    its other threads (the checkpointer) may still be exiting, and its sockets close only when the last one has."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except FileNotFoundError:
            continue
    return False


def test_workers_carry_on_without_the_writer(server_factory, tmp_path):
    # SQLite whatever GCL_TEST_DATABASE says: the writer exists only for SQLite
    server = server_factory(workers=2, database_url=f"sqlite:///{tmp_path / 'writer.db'}")
    base = server.limits_url
    with requests.Session() as http:
        assert http.post(f"{base}/", json={"name": "db", "limit": 2}, timeout=5).status_code == 201
        held = http.post(f"{base}/increment-with-lease", json={"names": ["db"], "slots": 1}, timeout=5).json()

        pid = _writer_pid(server)
        os.kill(pid, signal.SIGKILL)  # crashed: the workers' next calls cannot be delivered
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

        def cycle():
            response = http.post(f"{base}/increment-with-lease", json={"names": ["db"], "slots": 1}, timeout=5)
            assert response.status_code == 200, response.text
            return response.json()["lease_id"]

        # A write that finds the lock taken would go to the writer: it runs in the worker instead.
        lock = os.open(server.database_url.removeprefix("sqlite:///") + "-gcl-write.lock", os.O_RDWR)
        fcntl.flock(lock, fcntl.LOCK_EX)
        box = {}
        blocked = threading.Thread(target=lambda: box.setdefault("lease", cycle()))
        blocked.start()
        deadline = time.monotonic() + 10
        while "SQLite writer is unreachable" not in server.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        blocked.join(10)
        assert "SQLite writer is unreachable" in server.log_path.read_text()
        second = box["lease"]
        assert (
            http.post(f"{base}/increment-with-lease", json={"names": ["db"], "slots": 1}, timeout=5).status_code == 423
        )
        # A parked request is still handed the slot by a release the worker now runs itself.
        box = {}
        body = {"names": ["db"], "slots": 1, "wait_seconds": 20}
        waiter = threading.Thread(
            target=lambda: box.setdefault("r", requests.post(f"{base}/increment-with-lease", json=body, timeout=30))
        )
        waiter.start()
        deadline = time.monotonic() + 10
        while not http.get(f"{base}/db/waiters", timeout=5).json() and time.monotonic() < deadline:
            time.sleep(0.01)
        released = time.monotonic()
        assert http.post(f"{base}/decrement-with-lease", json={"lease_id": held["lease_id"]}, timeout=5).ok
        waiter.join(30)
        assert box["r"].status_code == 200 and time.monotonic() - released < 1.0
        for lease_id in (second, box["r"].json()["lease_id"]):
            assert http.post(f"{base}/decrement-with-lease", json={"lease_id": lease_id}, timeout=5).ok
        assert http.get(f"{base}/db", timeout=5).json()["active_slots"] == 0
