"""The whole `prefect gcl` CLI against GCL: every command, its exit code and what it prints (as against Prefect)."""

import json
import uuid


def test_create_ls_inspect(prefect):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    out = prefect.cli("gcl", "create", name, "--limit", "4")
    limit_id = prefect.read(name)["id"]
    assert f"Created global concurrency limit with name {name!r} and ID '{limit_id}'" in out
    assert "already exists" in prefect.cli("gcl", "create", name, "--limit", "4", expect=1)

    prefect.cli("gcl", "create", f"{name}-rate", "-l", "2", "--slot-decay-per-second", "0.5", "--disable")
    rate = prefect.read(f"{name}-rate")
    assert (rate["limit"], rate["slot_decay_per_second"], rate["active"]) == (2, 0.5, False)
    assert "Invalid arguments provided" in prefect.cli("gcl", "create", "bad/name", "--limit", "1", expect=1)
    assert "Invalid arguments provided" in prefect.cli("gcl", "create", f"{name}-neg", "--limit", "-1", expect=1)

    table = prefect.cli("gcl", "ls")
    assert "Global Concurrency Limits" in table and limit_id in table and name in table
    listed = {item["name"]: item for item in json.loads(prefect.cli("gcl", "ls", "-o", "json"))}
    assert listed[name]["limit"] == 4 and listed[name]["active_slots"] == 0 and listed[name]["id"] == limit_id
    assert "Only 'json' output format is supported." in prefect.cli("gcl", "ls", "-o", "yaml", expect=1)

    pretty = prefect.cli("gcl", "inspect", name)
    assert "GlobalConcurrencyLimitResponse(" in pretty and f"name={name!r}" in pretty and "limit=4" in pretty
    inspected = json.loads(prefect.cli("gcl", "inspect", name, "--output", "json"))
    assert inspected["id"] == limit_id and inspected["slot_decay_per_second"] == 0.0
    target = prefect.home / "limit.json"
    assert "written to" in prefect.cli("gcl", "inspect", name, "-o", "json", "-f", str(target))
    assert json.loads(target.read_text())["name"] == name
    assert "requires the --output option" in prefect.cli("gcl", "inspect", name, "-f", str(target), expect=1)
    assert "Global concurrency limit 'nope-x' not found." in prefect.cli("gcl", "inspect", "nope-x", expect=1)


def test_update_enable_disable(prefect):
    name = f"upd-{uuid.uuid4().hex[:8]}"
    prefect.limit(name, limit=2)
    updated = f"Updated global concurrency limit with name {name!r}."
    assert updated in prefect.cli("gcl", "update", name, "--limit", "10")
    assert updated in prefect.cli("gcl", "update", name, "--disable", "--limit", "5")
    assert (prefect.read(name)["limit"], prefect.read(name)["active"]) == (5, False)
    assert updated in prefect.cli("gcl", "update", name, "--enable")
    assert updated in prefect.cli("gcl", "update", name, "--slot-decay-per-second", "0.5")
    assert (prefect.read(name)["active"], prefect.read(name)["slot_decay_per_second"]) == (True, 0.5)
    both = prefect.cli("gcl", "update", name, "--enable", "--disable", expect=1)
    assert "Cannot enable and disable a global concurrency limit at the same time." in both
    assert "No update arguments provided." in prefect.cli("gcl", "update", name, expect=1)
    assert "Global concurrency limit 'nope-y' not found." in prefect.cli("gcl", "update", "nope-y", "-l", "1", expect=1)

    assert f"Disabled global concurrency limit with name {name!r}." in prefect.cli("gcl", "disable", name)
    assert "is already disabled" in prefect.cli("gcl", "disable", name, expect=1)
    assert f"Enabled global concurrency limit with name {name!r}." in prefect.cli("gcl", "enable", name)
    assert "is already enabled" in prefect.cli("gcl", "enable", name, expect=1)
    assert "not found" in prefect.cli("gcl", "enable", "nope-z", expect=1)


def test_update_active_slots_is_a_reset(prefect):
    """`--active-slots 0` resets (ends the leases); GCL cannot set held slots to another number (deliberate)."""
    name = f"reset-{uuid.uuid4().hex[:8]}"
    prefect.limit(name, limit=3)
    lease = prefect.acquire(name, 2)
    assert prefect.read(name)["active_slots"] == 2
    refused = prefect.cli("gcl", "update", name, "--active-slots", "1", expect=1)
    assert "Error updating global concurrency limit: active_slots can only be set to 0" in refused
    assert prefect.read(name)["active_slots"] == 2
    assert f"Updated global concurrency limit with name {name!r}." in prefect.cli(
        "gcl", "update", name, "--active-slots", "0"
    )
    assert prefect.read(name)["active_slots"] == 0
    assert prefect.renew(lease) == 410


def test_delete(prefect):
    name = f"del-{uuid.uuid4().hex[:8]}"
    prefect.limit(name, limit=1)
    assert f"Deleted global concurrency limit with name {name!r}." in prefect.cli("gcl", "delete", name)
    assert f"Global concurrency limit {name!r} not found." in prefect.cli("gcl", "delete", name, expect=1)
    assert f"Global concurrency limit {name!r} not found." in prefect.cli("gcl", "inspect", name, expect=1)
    assert name not in [item["name"] for item in json.loads(prefect.cli("gcl", "ls", "-o", "json"))]


def test_ls_on_an_empty_server(prefect, server_factory):
    prefect.env["PREFECT_API_URL"] = server_factory(workers=1).url
    assert "No global concurrency limits found." in prefect.cli("global-concurrency-limit", "ls")
    assert json.loads(prefect.cli("gcl", "ls", "-o", "json")) == []
