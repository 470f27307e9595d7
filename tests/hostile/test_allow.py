"""OPTIONS tells the truth: on every path of the OpenAPI document, Allow lists exactly the methods the server serves
there (any answer but 405), fixed paths that are also a limit's name (/filter, /increment, ...) included."""

import re

import pytest

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
UUID = "6f1c2d3e-0000-4000-8000-000000000000"


def _paths(client):
    for template in client.get("/api/openapi.json").json["paths"]:
        yield re.sub(r"\{(\w+)\}", lambda match: "probe" if match[1] == "id_or_name" else UUID, template)


def test_allow_lists_what_each_path_serves(client):
    paths = list(_paths(client))
    assert "/api/v2/concurrency_limits/filter" in paths and len(paths) > 20
    wrong = {}
    for path in paths:
        allowed = {method.strip() for method in client.options(path).headers["Allow"].split(",")}
        served = {method for method in METHODS if client.open(path, method=method, json={}).status_code != 405}
        if served != allowed & set(METHODS):
            wrong[path] = (sorted(allowed), sorted(served))
    assert wrong == {}


@pytest.mark.parametrize("word", ["filter", "increment", "increment-with-lease", "decrement", "decrement-with-lease"])
def test_a_fixed_path_is_also_a_name(client, word):
    base = "/api/v2/concurrency_limits"
    assert client.put(f"{base}/{word}", json={"limit": 2}).status_code == 201
    assert client.get(f"{base}/{word}").json["name"] == word
    allowed = set(client.options(f"{base}/{word}").headers["Allow"].split(", "))
    assert allowed >= {"GET", "PUT", "PATCH", "DELETE", "POST"}
    assert client.delete(f"{base}/{word}").status_code == 204
