"""WAL checkpoints off the write path (Dialect.checkpoint, run by the SQLite writer process): the WAL is copied back
while writers go on, and it still starts over, so it stays bounded under a stream of writes that never pauses."""

import os
import threading

import requests

PAGE = 4096


def _wal_pages(database_path):
    return os.path.getsize(f"{database_path}-wal") / PAGE


def test_the_wal_starts_over_while_writes_never_pause(tmp_path):
    from gcl_server.database import db
    from gcl_server.services import limits, slots

    from tests.conftest import migrated_app

    path = tmp_path / "gcl.db"
    app = migrated_app({"DATABASE_URL": f"sqlite:///{path}", "SWEEPER": False})
    with app.app_context():
        limits.create({"name": "db", "limit": 5})
        stop, errors, cycles = threading.Event(), [], [0]

        def write():  # another thread's stream of slot transactions, one right after the other
            try:
                db.obj.execute_sql("PRAGMA wal_autocheckpoint=0")  # no checkpoint at its commits: only ours
                while not stop.is_set():
                    slots.release(slots.acquire(slots.AcquireRequest(["db"], 1, lease_seconds=60)).lease_id)
                    cycles[0] += 1
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)
            finally:
                db.close()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            pages = []
            while cycles[0] < 600 and writer.is_alive():
                pages.append(db.obj.dialect.checkpoint(restart_pages=100))
        finally:
            stop.set()
            writer.join(30)
        assert not errors
        # ~10 pages per transaction, 1200 transactions: a WAL that never started over would be ~12 000 pages long.
        assert cycles[0] >= 600
        assert max(pages) < 2000 and _wal_pages(path) < 2000, (max(pages), _wal_pages(path))
        # Every lease was released: nothing was lost on the way.
        assert slots.leases_of(limits.find("db").id) == []


def test_a_server_keeps_its_wal_short_without_checkpointing_in_its_transactions(server_factory, tmp_path):
    """Under gunicorn the writer process checkpoints; the workers' commits would only past 10 000 pages."""
    path = tmp_path / "wal.db"
    server = server_factory(workers=2, database_url=f"sqlite:///{path}")
    base = server.limits_url
    with requests.Session() as http:
        assert http.post(f"{base}/", json={"name": "db", "limit": 5}, timeout=5).status_code == 201
        for _ in range(800):  # ~16 000 pages of WAL written
            lease = http.post(f"{base}/increment-with-lease", json={"names": ["db"], "slots": 1}, timeout=5).json()
            assert http.post(f"{base}/decrement-with-lease", json={"lease_id": lease["lease_id"]}, timeout=5).ok
    assert _wal_pages(path) < 5000
