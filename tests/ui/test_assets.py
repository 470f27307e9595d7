"""The UI's server side without a browser: versioned cached assets, vendored files intact, scopes, compact reads."""

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest
from gcl_server.ui import views

STATIC = Path(views.__file__).parent / "static"
TEMPLATES = Path(views.__file__).parent / "templates"
KEYS = {"adm": "admin", "acq": "acquire", "rd": "read"}


@pytest.fixture
def keyed(app):
    app.config["API_KEYS"] = dict(KEYS)
    return app.test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def asset_urls(html):
    return re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', html)


def test_vendored_swagger_ui_is_the_pinned_release_with_its_licence():
    folder = STATIC / views.SWAGGER_UI
    sums = (folder / "SHA256SUMS").read_text().split("\n")
    for line in filter(None, sums):
        digest, name = line.split()
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (folder / "LICENSE").read_text()


def test_no_asset_or_page_names_another_origin():
    """Self-contained: nothing is fetched from a CDN (the vendored bundle only mentions URLs in its own text)."""
    own = [*TEMPLATES.glob("*.html"), *STATIC.glob("*.js"), *STATIC.glob("*.css")]
    for path in own:
        assert not re.search(r"(src|href)=\"(https?:)?//", path.read_text()), path
        assert "cdn." not in path.read_text(), path


@pytest.mark.parametrize("path", ["/", "/ui/", "/ui/limits/some-limit", "/api/docs"])
def test_pages_name_versioned_assets_that_are_cached_for_good(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    urls = asset_urls(page.get_data(as_text=True))
    assert urls
    for url in urls:
        version, name = re.match(r"/ui/static/([0-9a-f]{12})/(.+)", url).groups()
        with client.get(url) as asset:
            assert asset.status_code == 200, url
            assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest().startswith(version)
        # Another version of the same file (a shell from before an upgrade): served, never kept.
        with client.get(url.replace(version, "0" * 12)) as other:
            assert other.headers["Cache-Control"] == "no-cache"


def test_static_files_outside_the_folder_are_not_served(client):
    assert client.get("/ui/static/x/../views.py").status_code == 404
    assert client.get("/ui/static/x/%2e%2e/views.py").status_code == 404
    assert client.get("/ui/static/x/nothing.js").status_code == 404


def test_shell_and_assets_are_public_data_needs_read(keyed):
    for path in ("/", "/ui/limits/x", "/api/docs", "/api/openapi.json", "/api/ui/session"):
        assert keyed.get(path).status_code == 200, path
    asset = asset_urls(keyed.get("/").get_data(as_text=True))[0]
    with keyed.get(asset) as response:
        assert response.status_code == 200
    assert keyed.get("/api/ui/limits").status_code == 401
    assert keyed.get("/api/ui/limits", headers=bearer("wrong")).status_code == 401
    for key in KEYS:
        assert keyed.get("/api/ui/limits", headers=bearer(key)).status_code == 200


def test_session_tells_the_page_the_scope_of_its_key(app):
    assert app.test_client().get("/api/ui/session").get_json() == {"keys_required": False, "scope": "admin"}
    app.config["API_KEYS"] = dict(KEYS)
    keyed = app.test_client()
    assert keyed.get("/api/ui/session").get_json() == {"keys_required": True, "scope": None}
    assert keyed.get("/api/ui/session", headers=bearer("wrong")).get_json()["scope"] is None
    for key, scope in KEYS.items():
        assert keyed.get("/api/ui/session", headers=bearer(key)).get_json()["scope"] == scope


def test_openapi_declares_the_scope_of_each_ui_route(client):
    spec = client.get("/api/openapi.json").get_json()

    def security(path):  # an operation's own, else the document's default (the bearer key)
        return spec["paths"][path]["get"].get("security", spec["security"])

    assert security("/api/ui/session") == []
    for path in ("/api/ui/limits", "/api/ui/limits/{id_or_name}"):
        assert {"bearer": []} in security(path) and "security" not in spec["paths"][path]["get"]
    assert "/ui/" not in "".join(spec["paths"]).replace("/api/ui/", "")  # the HTML shell is not an API route


def _create(client, name, limit=10, **fields):
    response = client.post("/api/v2/concurrency_limits/", json={"name": name, "limit": limit, **fields})
    assert response.status_code == 201, response.get_json()


def _acquire(client, name, slots):
    response = client.post("/api/v2/concurrency_limits/increment-with-lease", json={"names": [name], "slots": slots})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["lease_id"]


def test_one_page_of_the_list_in_one_request(client):
    for i in range(120):
        _create(client, f"Bulk-{i:03d}")
    _acquire(client, "Bulk-007", 9)
    _acquire(client, "Bulk-100", 5)
    first = client.get("/api/ui/limits?limit=50").get_json()
    assert first["total"] == 120 and len(first["items"]) == 50
    assert [r["name"] for r in first["items"]][:2] == ["Bulk-000", "Bulk-001"]
    last = client.get("/api/ui/limits?limit=50&offset=100").get_json()
    assert [r["name"] for r in last["items"]][-1] == "Bulk-119" and len(last["items"]) == 20
    fullest = client.get("/api/ui/limits?sort=fill&order=desc&limit=3").get_json()["items"]
    assert [(r["name"], r["active_slots"]) for r in fullest[:2]] == [("Bulk-007", 9), ("Bulk-100", 5)]
    found = client.get("/api/ui/limits?q=bulk-11").get_json()  # any case, anywhere in the name
    assert found["total"] == 10 and all("11" in r["name"] for r in found["items"])
    by_name_desc = client.get("/api/ui/limits?order=desc&limit=1").get_json()["items"]
    assert by_name_desc[0]["name"] == "Bulk-119"
    assert client.get("/api/ui/limits?sort=nonsense").status_code == 422
    assert client.get("/api/ui/limits?limit=201").status_code == 422


def test_search_treats_like_wildcards_as_text(client):
    _create(client, "a_b")
    _create(client, "axb")
    assert [r["name"] for r in client.get("/api/ui/limits?q=a_b").get_json()["items"]] == ["a_b"]


def test_queue_length_and_exact_occupancy(client):
    _create(client, "rate", 10, slot_decay_per_second=0.5)
    response = client.post(
        "/api/v2/concurrency_limits/increment", json={"names": ["rate"], "slots": 3, "mode": "rate_limit"}
    )
    assert response.status_code == 200
    row = client.get("/api/ui/limits").get_json()["items"][0]
    assert 2.0 < row["occupancy"] < 3.0 + 1e-9 and row["active_slots"] == 3
    assert row["queued"] == 0


def test_limit_detail_shows_lease_ids_to_admin_keys_only(app, keyed):
    app.config["API_KEYS"] = {}
    open_client = app.test_client()
    _create(open_client, "held", 5)
    lease = _acquire(open_client, "held", 2)
    app.config["API_KEYS"] = dict(KEYS)
    admin = keyed.get("/api/ui/limits/held", headers=bearer("adm")).get_json()
    assert admin["leases"][0]["lease_id"] == lease and admin["limit"]["etag"].startswith('"')
    for key in ("acq", "rd"):
        body = keyed.get("/api/ui/limits/held", headers=bearer(key)).get_json()
        assert body["leases"][0]["lease_id"] is None and body["leases"][0]["slots"] == 2
        assert lease not in str(body)
    assert keyed.get("/api/ui/limits/nope", headers=bearer("rd")).status_code == 404


def test_limit_detail_carries_recent_activity_and_the_achieved_rate(app, keyed):
    app.config["API_KEYS"] = {}
    open_client = app.test_client()
    _create(open_client, "paced", 10, slot_decay_per_second=1.0)
    _create(open_client, "plain", 3)
    for _ in range(3):
        response = open_client.post(
            "/api/v2/concurrency_limits/increment", json={"names": ["paced"], "slots": 2, "mode": "rate_limit"}
        )
        assert response.status_code == 200
    lease = _acquire(open_client, "plain", 1)
    body = open_client.get("/api/ui/limits/paced").get_json()
    assert [a["kind"] for a in body["activity"]] == ["acquired", "acquired", "acquired", "created"]
    buckets = body["rate"]["buckets"]
    assert body["rate"]["bucket_seconds"] == 10 and 1 <= len(buckets) <= 31
    assert sum(b["slots"] for b in buckets) == 6 and buckets[-1]["rate"] > 0
    assert open_client.get("/api/ui/limits/plain").get_json()["rate"] is None  # no decay: no rate to chart
    app.config["API_KEYS"] = dict(KEYS)
    admin = keyed.get("/api/ui/limits/plain", headers=bearer("adm")).get_json()
    assert admin["activity"][0]["kind"] == "acquired" and admin["activity"][0]["lease_id"] == lease
    reader = keyed.get("/api/ui/limits/plain", headers=bearer("rd")).get_json()
    assert lease not in str(reader)


def test_text_assets_travel_gzipped_when_the_browser_takes_it(client):
    for url in asset_urls(client.get("/api/docs").get_data(as_text=True)):
        name = re.match(r"/ui/static/[0-9a-f]{12}/(.+)", url).group(1)
        with client.get(url, headers={"Accept-Encoding": "gzip, deflate, br"}) as packed:
            assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
            assert gzip.decompress(packed.data) == (STATIC / name).read_bytes()
            assert packed.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        with client.get(url) as plain:
            assert "Content-Encoding" not in plain.headers and plain.data == (STATIC / name).read_bytes()


def test_the_refresh_travels_gzipped(client):
    for i in range(60):
        _create(client, f"z-{i:02d}")
    plain = client.get("/api/ui/limits")
    packed = client.get("/api/ui/limits", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    assert len(packed.data) * 4 < len(plain.data)
    body = json.loads(gzip.decompress(packed.data))
    assert [r["name"] for r in body["items"]] == [r["name"] for r in plain.get_json()["items"]]


def test_sorting_by_live_figures_reads_them_in_chunks(client, monkeypatch):
    from gcl_server.ui import summary

    monkeypatch.setattr(summary, "CHUNK", 3)  # as if there were more limits than one statement may name
    for i in range(10):
        _create(client, f"c-{i}")
    _acquire(client, "c-7", 4)
    for sort in ("fill", "occupancy", "queued"):
        body = client.get(f"/api/ui/limits?sort={sort}&order=desc").get_json()
        assert body["total"] == 10 and len(body["items"]) == 10
    assert client.get("/api/ui/limits?sort=fill&order=desc").get_json()["items"][0]["name"] == "c-7"
