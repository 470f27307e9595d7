"""The events socket as Prefect's client speaks it, and what it answers to anything else (websockets' own client)."""

import json
import uuid

import pytest
import requests

from tests.conftest import Server

# Runs under Prefect's virtualenv, which has the `websockets` client Prefect itself uses.
PROBE = """
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

def session(messages, subprotocols=("prefect",), headers=None):
    url = API.replace("http", "ws", 1) + "/events/in"
    try:
        with connect(url, subprotocols=list(subprotocols) or None, additional_headers=headers, open_timeout=5) as ws:
            replies = []
            for message in messages:
                ws.send(message)
                if message.startswith('{"type": "auth"'):
                    replies.append(json.loads(ws.recv(timeout=5)))
            ws.ping().wait(5)  # Prefect's checkpoint: every message before it was read
            try:
                ws.recv(timeout=2)
            except TimeoutError:
                pass
            return {"subprotocol": ws.subprotocol, "replies": replies, "closed": None}
    except ConnectionClosed as exc:
        return {"closed": [exc.rcvd.code, exc.rcvd.reason] if exc.rcvd else None}
    except InvalidStatus as exc:
        return {"status": exc.response.status_code}
"""


def event(limit_id, name, kind="acquired", slots=2):
    return json.dumps(
        {
            "occurred": "2026-12-05T04:31:15.066765Z",
            "event": f"prefect.concurrency-limit.{kind}",
            "resource": {
                "prefect.resource.id": f"prefect.concurrency-limit.{limit_id}",
                "prefect.resource.name": name,
                "slots-acquired": str(slots),
                "limit": "3",
            },
            "related": [],
            "payload": {},
            "id": str(uuid.uuid4()),
            "follows": None,
        }
    )


def test_prefect_protocol_keeps_limit_events_and_drops_others(prefect):
    name = f"sock-{uuid.uuid4().hex[:8]}"
    limit_id = prefect.limit(name, limit=3)["id"]
    other = json.dumps({**json.loads(event(limit_id, name)), "event": "prefect.flow-run.Completed"})
    result = prefect.run(
        PROBE
        + f"""
done(answer=session(['{{"type": "auth", "token": null}}', {event(limit_id, name)!r}, {other!r}]),
     events=[(e["slots"], e["detail"]["event"]) for e in activity({name!r})])
""",
    )
    assert result["answer"] == {"subprotocol": "prefect", "replies": [{"type": "auth_success"}], "closed": None}
    assert result["events"] == [[2, "prefect.concurrency-limit.acquired"]]


@pytest.mark.parametrize(
    ("messages", "subprotocols", "code", "reason"),
    [
        (["not json"], ("prefect",), 1008, "Expected 'auth' message"),
        (['{"type": "auth", "token": null}', "not json"], ("prefect",), 1007, "Each message must be one JSON event."),
        (['{"type": "auth", "token": null}', '{"event": "x"}'], ("prefect",), 1007, "Not a Prefect event"),
        (['{"event": "x", "id": "nope"}'], (), 1007, "Not a Prefect event"),
    ],
)
def test_bad_messages_close_the_socket_with_a_reason(prefect, messages, subprotocols, code, reason):
    result = prefect.run(PROBE + f"done(answer=session({messages!r}, {subprotocols!r}))")
    closed_code, closed_reason = result["answer"]["closed"]
    assert closed_code == code and closed_reason.startswith(reason)


def test_with_api_keys_the_upgrade_needs_an_acquire_key(prefect, tmp_path):
    server = Server(tmp_path / "keyed", workers=1, env={"GCL_API_KEYS": "admin-k,reader-k:read,worker-k:acquire"})
    server.start()
    try:
        prefect.env["PREFECT_API_URL"] = server.url
        result = prefect.run(
            PROBE
            + """
auth = '{"type": "auth", "token": null}'
done(none=session([auth]), reader=session([auth], headers={"Authorization": "Bearer reader-k"}),
     worker=session([auth], headers={"Authorization": "Bearer worker-k"}))
"""
        )
    finally:
        server.stop()
    assert result["none"] == {"status": 401} and result["reader"] == {"status": 403}
    assert result["worker"]["replies"] == [{"type": "auth_success"}]


def test_event_sockets_hold_at_most_an_eighth_of_the_threads(prefect, tmp_path):
    """With 16 threads, 2 sockets may be open: a third upgrade is refused at once (503), slot requests still go."""
    server = Server(tmp_path / "small", workers=1, env={"GCL_THREADS": "16"}).start()
    try:
        prefect.env["PREFECT_API_URL"] = server.url
        result = prefect.run(
            PROBE
            + """
url = API.replace("http", "ws", 1) + "/events/in"
held = [connect(url, subprotocols=["prefect"], open_timeout=5) for _ in range(2)]
for ws in held:
    ws.send('{"type": "auth", "token": null}')
    ws.recv(timeout=5)
third = session(['{"type": "auth", "token": null}'])
ready = httpx.get(f"{API}/ready").status_code
for ws in held:
    ws.close()
after = session(['{"type": "auth", "token": null}'])
done(third=third, ready=ready, after=after["replies"])
"""
        )
    finally:
        server.stop()
    assert result["third"] == {"status": 503} and result["ready"] == 200
    assert result["after"] == [{"type": "auth_success"}]


def test_a_broken_upgrade_is_a_400_with_a_message(gcl):
    headers = {"Connection": "Upgrade", "Upgrade": "websocket"}  # no Sec-WebSocket-Key nor -Version
    response = requests.get(f"{gcl.url}/events/in", headers=headers, timeout=10)
    assert response.status_code == 400
    assert response.json()["message"].startswith("Not a valid WebSocket upgrade request: ")
    plain = requests.get(f"{gcl.url}/events/in", timeout=10)
    assert plain.status_code == 400 and "WebSocket endpoint" in plain.json()["message"]


def test_with_api_keys_prefect_runs_quietly_on_its_auth_string(prefect, tmp_path):
    """A keyed GCL serves Prefect's SDK set up as for a self-hosted Prefect server with authentication:
    PREFECT_API_AUTH_STRING="<any user>:<key>". Its REST calls and its events socket both carry those Basic
    credentials, so slots are taken and released, the events arrive, and Prefect logs nothing."""
    server = Server(tmp_path / "keyed", workers=1, env={"GCL_API_KEYS": "admin-k,worker-k:acquire"})
    server.start()
    try:
        name = f"keyed-{uuid.uuid4().hex[:8]}"
        created = requests.post(
            f"{server.limits_url}/", json={"name": name, "limit": 1}, headers={"Authorization": "Bearer admin-k"}
        )
        assert created.status_code == 201, created.text
        prefect.env["PREFECT_API_URL"] = server.url
        prefect.env["PREFECT_API_AUTH_STRING"] = "gcl:worker-k"
        result = prefect.run(f"""
            from prefect.concurrency.sync import concurrency
            AUTH = ("gcl", "worker-k")
            with concurrency({name!r}, occupy=1):
                held = httpx.get(f"{{API}}/v2/concurrency_limits/{name}", auth=AUTH).json()["active_slots"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # the events reach the server before the process exits
                records = httpx.get(f"{{API}}/v2/concurrency_limits/{name}/activity", auth=AUTH).json()
                events = sorted(r["detail"]["event"] for r in records if r["kind"] == "event")
                if len(events) == 2:
                    break
                time.sleep(0.05)
            done(held=held, events=events)
        """)
    finally:
        server.stop()
    assert result["held"] == 1
    assert result["events"] == ["prefect.concurrency-limit.acquired", "prefect.concurrency-limit.released"]
