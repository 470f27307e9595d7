"""The audit trail: every change, reset and revoke of a limit is recorded with the key that did it (never the key
itself), readable through the API and `gcl history`."""

import json
import subprocess
import sys
from pathlib import Path

import requests

ALICE, BOB = "alice-key-0f1e2d3c", "bob-key-4b5a6978"
GCL = Path(sys.executable).parent / "gcl"


def _gcl(server, key, *args):
    done = subprocess.run(
        [str(GCL), "--api-url", server.url, "--api-key", key, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_changes_resets_and_revokes_are_recorded_with_their_actor(server_factory):
    server = server_factory(env={"GCL_API_KEYS": f"{ALICE},{BOB}"})
    url = server.limits_url
    alice, bob = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
    assert requests.post(f"{url}/", json={"name": "audited", "limit": 2}, headers=alice).status_code == 201
    assert requests.patch(f"{url}/audited", json={"limit": 5}, headers=bob).status_code == 204
    lease = requests.post(f"{url}/increment-with-lease", json={"names": ["audited"], "slots": 1}, headers=bob).json()
    assert requests.delete(f"{url}/leases/{lease['lease_id']}", headers=alice).status_code == 204
    assert requests.post(f"{url}/audited/reset", headers=bob).status_code == 200

    records = requests.get(f"{url}/audited/activity", headers=alice).json()
    kinds = [record["kind"] for record in records]
    assert kinds == ["reset", "revoked", "acquired", "updated", "created"]
    by_kind = {record["kind"]: record for record in records}
    actors = {record["kind"]: record["actor"] for record in records}
    assert actors["created"] == actors["revoked"] != actors["updated"] == actors["reset"]
    assert all(actor.startswith("key:") for actor in actors.values())
    assert ALICE not in json.dumps(records) and BOB not in json.dumps(records)
    assert by_kind["updated"]["detail"]["before"]["limit"] == 2 and by_kind["updated"]["detail"]["after"]["limit"] == 5
    assert by_kind["revoked"]["lease_id"] == lease["lease_id"]
    assert by_kind["created"]["at"].endswith("Z")

    # The CLI reads the same records: JSON as the API gives them, and a table.
    assert json.loads(_gcl(server, ALICE, "history", "audited", "-o", "json")) == records
    table = _gcl(server, ALICE, "history", "audited", "-n", "2").splitlines()
    assert table[0].split() == ["AT", "KIND", "ACTOR", "CHANGE"]
    assert [line.split()[1] for line in table[1:]] == ["reset", "revoked"]
    assert actors["reset"] in table[1] and lease["lease_id"] in table[2]
    update = _gcl(server, ALICE, "history", "audited").splitlines()
    assert any("updated" in line and "limit: 2 -> 5" in line for line in update)
