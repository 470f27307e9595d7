"""Every integer a request may carry is bounded in its schema (one declaration: the schema, shown in OpenAPI): a
number beyond it is a 422, never a 500 from the database."""

import pytest

HUGE = 18446744073709551616  # 2**64: past any column


def request_integers(spec):
    """(where, schema) of every integer in a request body or parameter of the served OpenAPI document."""
    components = spec["components"]["schemas"]

    def walk(schema, where, seen):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                yield from walk(components[name], f"{where}<{name}>", seen | {name})
            return
        if schema.get("type") == "integer":
            yield where, schema
        for key, inner in schema.get("properties", {}).items():
            yield from walk(inner, f"{where}.{key}", seen)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                yield from walk(schema[key], f"{where}[]", seen)
        for inner in schema.get("allOf", []) + schema.get("anyOf", []) + schema.get("oneOf", []):
            yield from walk(inner, where, seen)

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                yield from walk(parameter.get("schema", {}), f"{method} {path} {parameter['name']}", frozenset())
            for media in operation.get("requestBody", {}).get("content", {}).values():
                yield from walk(media.get("schema", {}), f"{method} {path} body", frozenset())


def test_every_request_integer_has_bounds(client):
    spec = client.get("/api/openapi.json").json
    found = list(request_integers(spec))
    assert len(found) > 5
    unbounded = [where for where, schema in found if "minimum" not in schema or "maximum" not in schema]
    assert unbounded == []


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/api/v2/concurrency_limits/filter", {"offset": HUGE}),
        ("post", "/api/v2/concurrency_limits/filter", {"limit": HUGE}),
        ("post", "/api/v2/concurrency_limits/increment", {"names": ["db"], "slots": HUGE}),
        ("patch", "/api/v2/concurrency_limits/db", {"denied_slots": HUGE}),
        ("get", "/api/v2/concurrency_limits/db/activity?before=18446744073709551616", None),
    ],
)
def test_an_integer_beyond_64_bits_is_422(client, method, path, body):
    assert client.post("/api/v2/concurrency_limits/", json={"name": "db", "limit": 1}).status_code == 201
    response = getattr(client, method)(path, json=body) if body is not None else getattr(client, method)(path)
    assert response.status_code == 422, response.json
    assert response.json["message"]
