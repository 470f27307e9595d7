"""The OpenAPI document says what the server does: its rules, read by the validator a schema fuzzer (Schemathesis)
uses and by Python's re, accept exactly what the server accepts."""

import re
import sys

import jsonschema_rs
import pytest
from gcl_server import names

BASE = "/api/v2/concurrency_limits"
RULE = ("type", "minLength", "maxLength", "pattern", "not")
# Every code point (surrogates aside: JSON text carrying one is not Unicode, and no ECMA or Rust pattern names one)
# alone, and inside a name; then the cases at the edges of the rule.
CODE_POINTS = [chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code < 0xE000]
EDGES = [
    ".", "..", "...", ".a", "a.", "a..", " a", "a ", "a\u3000", "\u00a0a", "a b", "a\n", "a\nb", "\ue000",
    "a\U000f0000", "6f1c2d3e-0000-4000-8000-000000000000", "6F1C2D3E00004000800000000000000A",
    "{6f1c2d3e-0000-4000-8000-000000000000}", "urn:uuid:6f1c2d3e-0000-4000-8000-000000000000",
    "6f1c2d3e-0000-4000-8000-00000000000", "x" * 255, "x" * 256, "",
]  # fmt: skip


def _name_schemas(spec):
    """(where, schema) of every name the document describes: create and update bodies, the PUT path."""
    components = spec["components"]["schemas"]
    yield "LimitCreate.name", components["LimitCreate"]["properties"]["name"]
    yield "LimitUpdate.name", components["LimitUpdate"]["properties"]["name"]
    put = spec["paths"][f"{BASE}/{{id_or_name}}"]["put"]
    (path,) = [parameter for parameter in put["parameters"] if parameter["in"] == "path"]
    yield "PUT path", path["schema"]


def _python_reader(schema):
    """The schema as a Python tool reads it (re.search, with the end of the string at $, as a generator draws)."""
    pattern = re.compile(schema["pattern"].removesuffix("$") + r"\Z")
    barred = re.compile(schema["not"]["pattern"])
    return lambda value: (
        schema["minLength"] <= len(value) <= schema["maxLength"]
        and bool(pattern.search(value))
        and not barred.search(value)
    )


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from tests.conftest import migrated_app

    app = migrated_app({"DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('doc') / 'gcl.db'}"})
    return app.test_client().get("/api/openapi.json").json


def test_every_name_in_the_document_carries_the_rule(spec):
    rules = {where: {key: schema.get(key) for key in RULE} for where, schema in _name_schemas(spec)}
    assert len(rules) == 3 and all(rule == {key: names.json_schema()[key] for key in RULE} for rule in rules.values())


def test_the_name_rule_in_the_document_is_the_servers(spec):
    schema = dict(_name_schemas(spec))["LimitCreate.name"]
    # Draft 4 is OpenAPI 3.0's; lookarounds as ECMA 262 has them (what Schemathesis configures too).
    validator = jsonschema_rs.Draft4Validator(schema, pattern_options=jsonschema_rs.FancyRegexOptions())
    python = _python_reader(schema)
    disagreements = []
    for value in (*CODE_POINTS, *(f"a{c}b" for c in CODE_POINTS), *(f"{c}ab" for c in CODE_POINTS), *EDGES):
        good = names.problem(value) is None and 1 <= len(value) <= names.MAX_LENGTH
        if validator.is_valid(value) != good or python(value) != good:
            disagreements.append((value, good, validator.is_valid(value), python(value)))
    assert disagreements == [], disagreements[:20]


def test_names_the_document_allows_are_served(client):
    for name in ("a", "a.", ".a", "...", "a b", "db\u00e9", "\U0001f600", "6f1c2d3e-0000-4000-8000-00000000000"):
        assert client.put(f"{BASE}/{name}", json={"limit": 1}).status_code == 201, name
        assert client.get(f"{BASE}/{name}").json["name"] == name
    for name in (".", "..", " a", "a ", "a\u202eb", "a\ue000", "6f1c2d3e-0000-4000-8000-000000000000"):
        response = client.put(f"{BASE}/{name}", json={"limit": 1})
        assert response.status_code == 422 and "Name must not" in response.json["message"], name


# PATCH bodies: the document (LimitUpdate) must accept exactly those the server takes.
PATCHES = [
    ({}, True),
    ({"limit": 4}, True),
    ({"active_slots": 0}, True),  # Prefect's reset
    ({"active_slots": 0, "denied_slots": 0}, True),
    ({"denied_slots": 3}, True),
    ({"limit": 4, "active_slots": 3}, True),  # a declarative write: counters ignored
    ({"active": True, "name": "db", "limit": 5, "active_slots": 2, "slot_decay_per_second": 0}, True),
    ({"active_slots": 3}, False),  # only 0 alone: slots are held by leases
    ({"active_slots": 3, "denied_slots": 0}, False),
    ({"active_slots": -1, "limit": 4}, False),
]


@pytest.mark.parametrize(("body", "accepted"), PATCHES, ids=[repr(body) for body, _ in PATCHES])
def test_the_patch_rule_in_the_document_is_the_servers(spec, client, body, accepted):
    client.post(f"{BASE}/", json={"name": "db", "limit": 3})
    validator = jsonschema_rs.Draft4Validator({**spec["components"]["schemas"]["LimitUpdate"]})
    response = client.patch(f"{BASE}/db", json=body)
    assert (validator.is_valid(body), response.status_code) == (accepted, 204 if accepted else 422), response.json
