"""The real server as `make run` starts it: gunicorn, several workers, an SQLite file, over loopback HTTP."""

import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def test_gunicorn_server_serves_crud_and_survives_restart(server_factory):
    server = server_factory(workers=2)
    base = server.limits_url
    created = requests.post(f"{base}/", json={"name": "database", "limit": 10}, timeout=5)
    assert created.status_code == 201
    assert requests.post(f"{base}/", json={"name": "database", "limit": 1}, timeout=5).status_code == 409
    # many requests over several connections reach both workers; all see the same data
    for _ in range(20):
        assert requests.get(f"{base}/database", timeout=5).json()["limit"] == 10
    grant = requests.post(
        f"{base}/increment-with-lease", json={"names": ["database"], "slots": 3, "lease_duration": 600}, timeout=5
    )
    assert grant.status_code == 200

    server.restart()

    after = requests.get(f"{server.limits_url}/database", timeout=5)
    assert after.status_code == 200 and after.json()["id"] == created.json()["id"]
    assert after.json()["active_slots"] == 3, "leases survive a restart"
    release = requests.post(
        f"{server.limits_url}/decrement-with-lease", json={"lease_id": grant.json()["lease_id"]}, timeout=5
    )
    assert release.status_code == 204
    assert requests.get(f"{server.limits_url}/database", timeout=5).json()["active_slots"] == 0


def test_no_500_for_garbage_over_http(server_factory):
    server = server_factory(workers=2)
    for data in [b"\xff\xfe", b"[" * 10000, b'{"name": "\\ud800", "limit": 1}', b"null"]:
        response = requests.post(
            f"{server.limits_url}/", data=data, headers={"Content-Type": "application/json"}, timeout=5
        )
        assert 400 <= response.status_code < 500, (data[:20], response.status_code, response.text)
        assert response.json()["message"]


def test_migrate_command_is_idempotent(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'gcl.db'}", "PATH": str(Path(sys.executable).parent)}
    cli = str(Path(sys.executable).parent / "gcl-server")
    first = subprocess.run([cli, "migrate"], env=env, capture_output=True, text=True, check=True)
    assert "[1" in first.stdout
    second = subprocess.run([cli, "migrate"], env=env, capture_output=True, text=True, check=True)
    assert "up to date" in second.stdout
    bad = subprocess.run([cli, "migrate"], env={**env, "DATABASE_URL": "mysql://x"}, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "unsupported scheme" in bad.stderr


def test_committed_openapi_is_current():
    cli = str(Path(sys.executable).parent / "gcl-server")
    result = subprocess.run(
        [cli, "openapi", "--check", str(ROOT / "api" / "openapi.json")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_idle_kept_alive_connections_never_hold_the_threads_a_request_needs(server_factory):
    """The worker's threads wait on the kept-alive connection they served (gcl_server/serving/worker.py), but only while
    threads are plentiful: with more idle connections than threads, new requests are still served at once (were the
    threads held, each would wait out LINGER_SECONDS, 5 s)."""
    import http.client
    import time

    server = server_factory(workers=1, env={"GCL_THREADS": "12"})

    def health(conn):
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        response.read()
        return response.status

    started = time.monotonic()
    idle = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(16)]
    try:
        assert [health(conn) for conn in idle] == [200] * 16  # each now kept alive, idle
        for _ in range(5):
            fresh = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            assert health(fresh) == 200
            fresh.close()
        assert [health(conn) for conn in idle] == [200] * 16  # and the kept-alive ones still work
    finally:
        for conn in idle:
            conn.close()
    assert time.monotonic() - started < 4.0
