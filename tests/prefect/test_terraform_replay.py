"""The official Terraform provider's exact request sequence (PrefectHQ/terraform-provider-prefect, resource
prefect_global_concurrency_limit), replayed against a real server while Prefect-style holders keep slots.

Bodies as its Go client marshals them (api.GlobalConcurrencyLimitCreate / ...Update: active, name, limit,
active_slots, slot_decay_per_second, in that order); success codes as it checks them (create 201, read 200,
update 204 then a read, delete 204); import by id is a read by id."""

import datetime as dt
import uuid

import requests


def provider_body(name, limit, *, active=True, decay=0.0):
    return {"active": active, "name": name, "limit": limit, "active_slots": 0, "slot_decay_per_second": decay}


def check_decodes_as_the_provider_does(limit):
    """The fields the provider copies into state, with the JSON types its Go structs need."""
    uuid.UUID(limit["id"])
    for stamp in (limit["created"], limit["updated"]):
        dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # customtypes.Timestamp: RFC 3339
    assert isinstance(limit["name"], str) and isinstance(limit["active"], bool)
    assert all(isinstance(limit[key], int) and not isinstance(limit[key], bool) for key in ("limit", "active_slots"))
    assert isinstance(limit["slot_decay_per_second"], float)


def test_apply_update_import_destroy_while_slots_are_held(prefect):
    api = prefect.server.limits_url
    http = requests.Session()
    http.headers["Content-Type"] = "application/json"
    name = f"tf-{uuid.uuid4().hex[:8]}"

    # terraform apply (create): POST .../v2/concurrency_limits/ then state from the answer
    created = http.post(f"{api}/", json=provider_body(name, 5))
    assert created.status_code == 201, created.text
    check_decodes_as_the_provider_does(created.json())
    limit_id = created.json()["id"]
    read = http.get(f"{api}/{limit_id}")
    assert read.status_code == 200 and read.json()["limit"] == 5 and read.json()["active_slots"] == 0

    # work starts: two holders, as Prefect's SDK acquires
    leases = [prefect.acquire(name, 1), prefect.acquire(name, 1)]
    assert http.get(f"{api}/{limit_id}").json()["active_slots"] == 2

    # terraform apply (limit 5 -> 10; then a rename and a decay): PATCH with all five fields, 204, then a read
    for body in (provider_body(name, 10), provider_body(f"{name}-x", 10, decay=0.0), provider_body(name, 10)):
        patched = http.patch(f"{api}/{limit_id}", json=body)
        assert patched.status_code == 204 and patched.content == b"", patched.text
        after = http.get(f"{api}/{limit_id}")
        assert after.status_code == 200
        check_decodes_as_the_provider_does(after.json())
        assert (after.json()["name"], after.json()["limit"]) == (body["name"], 10)
        assert after.json()["active_slots"] == 2  # the apply ended no lease
        assert [prefect.renew(lease) for lease in leases] == [204, 204]

    # terraform import prefect_global_concurrency_limit.x <id>: a read by id
    imported = http.get(f"{api}/{limit_id}")
    assert imported.status_code == 200 and imported.json()["id"] == limit_id

    # the holders finish as Prefect's SDK releases
    for lease in leases:
        assert http.post(f"{api}/decrement-with-lease", json={"lease_id": lease}).status_code == 204
    assert http.get(f"{api}/{limit_id}").json()["active_slots"] == 0

    # terraform destroy: DELETE by id, 204; a later read is a 404 (the provider then drops it from state)
    assert http.delete(f"{api}/{limit_id}").status_code == 204
    gone = http.get(f"{api}/{limit_id}")
    assert gone.status_code == 404 and gone.json()["detail"]


def test_destroy_while_slots_are_held_ends_the_leases(prefect):
    """Deleting a limit is not an apply that keeps it: its holders learn at their next renewal (410)."""
    api = prefect.server.limits_url
    name = f"tf-{uuid.uuid4().hex[:8]}"
    limit_id = requests.post(f"{api}/", json=provider_body(name, 2), timeout=10).json()["id"]
    lease = prefect.acquire(name)
    assert requests.delete(f"{api}/{limit_id}", timeout=10).status_code == 204
    assert prefect.renew(lease) == 410
