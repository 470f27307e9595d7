"""The gcl CLI, every command through a real subprocess against the live server."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from gcl import sync as gsync

pytestmark = pytest.mark.timeout(60)
GCL = str(Path(sys.executable).parent / "gcl")


@pytest.fixture
def gcl_cli(live_server):
    def run(*args, env_url=True, stdin=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
        if env_url:
            env["GCL_API_URL"] = live_server.url
        return subprocess.run(
            [GCL, *args], capture_output=True, text=True, env=env, timeout=30, input=stdin, check=False
        )

    return run


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result):
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_lifecycle(gcl_cli, live_server):
    name = f"cli-{uuid.uuid4().hex[:12]}"
    created = json.loads(ok(gcl_cli("create", name, "-l", "3", "--slot-decay-per-second", "0.5", "-o", "json")))
    assert (created["name"], created["limit"], created["active"], created["slot_decay_per_second"]) == (
        name,
        3,
        True,
        0.5,
    )
    table = ok(gcl_cli("ls"))
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "ACTIVE", "LIMIT", "ACTIVE", "SLOTS", "DECAY/S", "UPDATED"]
    assert any(row.split()[:3] == [name, "True", "3"] for row in rows)
    listed = json.loads(ok(gcl_cli("ls", "-o", "json")))
    assert name in [item["name"] for item in listed]
    assert json.loads(ok(gcl_cli("inspect", name, "-o", "json")))["id"] == created["id"]
    assert name in ok(gcl_cli("inspect", created["id"]))

    updated = json.loads(ok(gcl_cli("update", name, "--limit", "5", "--disable", "-o", "json")))
    assert (updated["limit"], updated["active"]) == (5, False)
    ok(gcl_cli("enable", name))
    assert json.loads(ok(gcl_cli("inspect", name, "-o", "json")))["active"] is True
    ok(gcl_cli("disable", name))
    assert json.loads(ok(gcl_cli("inspect", name, "-o", "json")))["active"] is False
    ok(gcl_cli("update", name, "--enable", "--slot-decay-per-second", "0"))

    with gsync.concurrency(name, occupy=2, api_url=live_server.url) as held:
        leases = json.loads(ok(gcl_cli("leases", name, "-o", "json")))
        assert [(x["lease_id"], x["slots"]) for x in leases] == [(held.lease_id, 2)]
        assert held.lease_id in ok(gcl_cli("leases", name))
        ok(gcl_cli("reset", name))
        assert json.loads(ok(gcl_cli("leases", name, "-o", "json"))) == []
        assert json.loads(ok(gcl_cli("inspect", name, "-o", "json")))["active_slots"] == 0

    ok(gcl_cli("delete", name, "--yes"))
    assert "not found" in fails(gcl_cli("inspect", name)).lower()


def test_create_disabled_and_delete_without_tty(gcl_cli):
    name = f"cli-{uuid.uuid4().hex[:12]}"
    assert json.loads(ok(gcl_cli("create", name, "-l", "1", "--disable", "-o", "json")))["active"] is False
    ok(gcl_cli("delete", name, stdin=""))  # stdin is not a terminal: no question asked
    fails(gcl_cli("delete", name, "--yes"))


def test_errors_are_one_line_exit_1(gcl_cli, live_server):
    name = f"cli-{uuid.uuid4().hex[:12]}"
    ok(gcl_cli("create", name, "-l", "1"))
    assert "already exists" in fails(gcl_cli("create", name, "-l", "1"))
    assert "must not contain" in fails(gcl_cli("create", "bad/name", "-l", "1"))
    fails(gcl_cli("create", f"{name}-x"))  # --limit is required
    fails(gcl_cli("update", name))  # nothing to update
    fails(gcl_cli("update", name, "--enable", "--disable"))
    fails(gcl_cli("nonsense"))
    assert "refused" in fails(gcl_cli("--api-url", "http://127.0.0.1:9/api", "ls"))
    assert json.loads(ok(gcl_cli("--api-url", live_server.url, "inspect", name, "-o", "json", env_url=False)))
    ok(gcl_cli("delete", name, "-y"))


@pytest.mark.parametrize(
    "command",
    [[], ["ls"], ["inspect"], ["create"], ["update"], ["enable"], ["disable"], ["delete"], ["reset"], ["leases"]],
)
def test_help_on_every_command(gcl_cli, command):
    out = ok(gcl_cli(*command, "--help"))
    assert out.startswith("usage: gcl")


@pytest.mark.parametrize(("answer", "deleted"), [("n", False), ("y", True)])
def test_delete_asks_on_a_terminal(gcl_cli, admin, answer, deleted):
    import pty

    name = f"cli-{uuid.uuid4().hex[:12]}"
    admin.create(name, 1)
    primary, secondary = pty.openpty()
    try:
        os.write(primary, f"{answer}\n".encode())
        env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
        env["GCL_API_URL"] = admin.config.api_url
        result = subprocess.run(
            [GCL, "delete", name], stdin=secondary, capture_output=True, text=True, env=env, timeout=30, check=False
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert "Delete limit" in result.stdout
    assert result.returncode == (0 if deleted else 1)
    assert (name in [lim.name for lim in admin.list(name_prefix=name)]) is not deleted
    if not deleted:
        admin.delete(name)
