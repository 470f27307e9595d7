"""One data layer: tables are declared once (models.py) and every query, the CRUD's as the engine's, runs through
database.execute. A query built on a model goes there through models.instances/records/first_value/write, never
through peewee's own execution (which sends SQL outside the engine's deferred writes on PostgreSQL)."""

import ast
import uuid
from pathlib import Path

import peewee
import pytest
from gcl_server import models

SOURCE = Path(models.__file__).resolve().parent
MODELS = {model.__name__ for model in (*models.TABLES, models.Counter)}
# What sends a peewee query or model to the database by itself (iterating over a query does too: see the chains).
EXECUTES = {
    "atomic",
    "bulk_create",
    "bulk_update",
    "count",
    "create",
    "delete_instance",
    "dicts",
    "execute",
    "execute_sql",
    "exists",
    "first",
    "get",
    "get_by_id",
    "get_or_create",
    "get_or_none",
    "insert_many",
    "iterator",
    "namedtuples",
    "objects",
    "peek",
    "save",
    "scalar",
    "scalars",
    "tuples",
}
UNAMBIGUOUS = EXECUTES - {"count", "create", "execute", "get"}  # (those four are also dicts', lists', cursors' ...)
RUNNERS = {"instances", "records", "first_value", "write"}
# Below the data layer: the schema (migrations), the connections and their dialect's own statements, SQLite's
# transactions in its writer process (peewee's atomic: BEGIN IMMEDIATE and savepoints, no query).
ALLOWED = {"models.py", "migrations.py", "database.py", "sqlite/writer.py"}


def _on_model(node, aliases):
    """Whether a chain of calls and attributes starts at a model class (C.select().where(...), models.Lease.get)."""
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Attribute) and node.attr in MODELS:
            return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return isinstance(node, ast.Name) and node.id in aliases


def orm_executions(source):
    """Line numbers where `source` runs a peewee query by itself: a call of a method only peewee's queries and models
    have; any executing method, or iteration, on a chain that starts at a model class (Model.select()...)."""
    tree = ast.parse(source)
    aliases = MODELS | {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models")
        for alias in node.names
        if alias.name in MODELS
    }
    runner_arguments = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RUNNERS
        for arg in node.args
    }
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, on_model = node.func.attr, _on_model(node.func.value, aliases)
            if method in UNAMBIGUOUS or (method in EXECUTES and on_model):
                lines.add(node.lineno)
        iterated = [node.iter] if isinstance(node, (ast.For, ast.comprehension)) else []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple", "dict"):
            iterated = node.args
        for value in iterated:
            if isinstance(value, ast.Call) and _on_model(value, aliases) and id(value) not in runner_arguments:
                lines.add(value.lineno)
    return sorted(lines)


def test_the_check_sees_every_way_in():
    source = (
        "from .models import ConcurrencyLimit as C, instances\n"
        "a = C.select().where(C.id == 1).first()\n"
        "b = C.get(C.id == 1)\n"
        "c = list(C.select())\n"
        "d = [x for x in C.select().order_by(C.name)]\n"
        "query.exists()\n"
        "limit.save()\n"
        "C.update(limit=1).where(C.id == 1).execute()\n"
        "db.atomic()\n"
        "rows = q.namedtuples()\n"
    )
    assert orm_executions(source) == list(range(2, 11))
    built = (
        "from .models import ConcurrencyLimit as C, instances, write\n"
        "a = instances(C.select().where(C.id == 1))\n"
        "for x in instances(C.select()):\n"
        "    write(C.delete().where(C.id == x.id), deferred=True)\n"
        "figures.get('occupancy'); names.count('a'); cursor.execute('SELECT 1')\n"
    )
    assert orm_executions(built) == []


def test_no_module_runs_an_orm_query():
    modules = sorted(SOURCE.rglob("*.py"))
    assert SOURCE / "services" / "limits.py" in modules and SOURCE / "ui" / "summary.py" in modules
    found = {
        name: lines
        for path in modules
        if (name := str(path.relative_to(SOURCE))) not in ALLOWED and (lines := orm_executions(path.read_text()))
    }
    assert found == {}, f"run queries built on the models with models.instances/records/first_value/write: {found}"


@pytest.fixture
def no_orm(monkeypatch):
    """Fail any query peewee would execute itself (Model.save, Select iteration, .first(), .count() ...)."""

    def refuse(self, query, **options):
        raise AssertionError(f"an ORM query ran outside database.execute: {query.sql()}")

    monkeypatch.setattr(peewee.Database, "execute", refuse)


def test_every_limit_operation_runs_through_the_engines_path(app, client, no_orm):
    """The CRUD, its lists, the UI's figures, the metrics and the external events, on either database."""
    from gcl_server.services import external_events

    with app.app_context(), pytest.raises(AssertionError, match="ORM query"):
        models.ConcurrencyLimit.select().first()  # the guard is live
    api = "/api/v2/concurrency_limits"
    name, other = f"one-{uuid.uuid4().hex[:8]}", f"two-{uuid.uuid4().hex[:8]}"
    created = client.post(f"{api}/", json={"name": name, "limit": 2, "slot_decay_per_second": 0.5})
    assert created.status_code == 201
    limit_id = created.get_json()["id"]
    assert client.post(f"{api}/", json={"name": name, "limit": 1}).status_code == 409
    assert client.put(f"{api}/{other}", json={"limit": 3}).status_code == 201
    assert client.put(f"{api}/{other}", json={"limit": 4}).status_code == 200
    etag = client.get(f"{api}/{limit_id}").headers["ETag"]
    assert client.patch(f"{api}/{name}", json={"name": other}).status_code == 409
    assert client.patch(f"{api}/{name}", json={"limit": 5}, headers={"If-Match": etag}).status_code == 204
    assert client.patch(f"{api}/{name}", json={"limit": 6}, headers={"If-Match": etag}).status_code == 412
    grant = client.post(f"{api}/increment-with-lease", json={"names": [other], "slots": 2, "lease_duration": 60})
    assert grant.status_code == 200
    assert client.patch(f"{api}/{other}", json={"active_slots": 0}).status_code == 204  # a reset
    assert client.post(f"{api}/{name}/reset").status_code == 200
    listed = client.post(f"{api}/filter", json={"names": [name, other]}).get_json()
    assert [(item["name"], item["limit"], item["active_slots"]) for item in listed] == [(name, 5, 0), (other, 4, 0)]
    assert client.post(f"{api}/filter", json={"name_prefix": name[:4]}).get_json()[0]["name"] == name
    for path in (f"{api}/{name}/leases", f"{api}/{name}/waiters", f"{api}/{name}/activity", f"/api/ui/limits/{name}"):
        assert client.get(path).status_code == 200, path
    for sort in ("name", "fill"):
        page = client.get(f"/api/ui/limits?q={name[:4].upper()}&sort={sort}").get_json()
        assert page["total"] == 1 and page["items"][0]["name"] == name
    assert f'gcl_limit_slots{{name="{name}"}} 5.0' in client.get("/metrics").get_data(as_text=True)
    with app.app_context():
        event = {"limit_id": limit_id, "slots": 1, "detail": {"id": str(uuid.uuid4())}}
        assert external_events.record([event, {**event, "limit_id": str(uuid.uuid4())}], actor=None) == 1
    assert client.delete(f"{api}/{name}").status_code == 204
    assert client.get(f"{api}/{limit_id}").status_code == 404


@pytest.fixture
def sent(app, monkeypatch):
    """The statements this thread's connection sends, one entry per round trip."""
    from gcl_server.database import db

    queries, cursor = [], db.obj.cursor

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def execute(self, query, params=None):
            queries.append(query)
            return self.inner.execute(query, () if params is None else params)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(db.obj, "cursor", lambda *a, **k: Counting(cursor(*a, **k)))
    return queries


def test_postgresql_limit_changes_send_their_writes_with_a_read_or_the_commit(app, client, sent):
    """A change of a limit writes nothing that needs a round trip of its own (its update, delete, revoked leases and
    records go with the transaction's next read or its COMMIT): PATCH 4 round trips (7 when the CRUD used peewee's
    ORM), DELETE 3 (7), reset 5 (11). A create's INSERT and a rename's UPDATE run at once: a name taken
    meanwhile is a 409."""
    from gcl_server.database import db

    if db.obj.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only (GCL_TEST_DATABASE=postgresql): SQLite has no round trip to save")
    api, name = "/api/v2/concurrency_limits", f"rt-{uuid.uuid4().hex[:8]}"
    assert client.post(f"{api}/", json={"name": name, "limit": 2}).status_code == 201
    for method, path, body, most in (
        ("patch", name, {"limit": 3}, 4),
        ("put", name, {"limit": 4}, 4),
        ("post", f"{name}/reset", None, 5),
        ("delete", name, None, 3),
    ):
        sent.clear()
        assert getattr(client, method)(f"{api}/{path}", json=body).status_code < 300
        trips = [[part.split(" ")[0] for part in trip.split("; ")] for trip in sent]
        assert len(trips) <= most and trips[0][:2] == ["BEGIN", "SELECT"] and trips[-1][-1] == "COMMIT", sent
        assert all("SELECT" in trip or trip[-1] == "COMMIT" for trip in trips), sent


def test_postgresql_refuses_a_statement_peewee_sends_past_the_deferred_ones(app):
    """In a write transaction whose BEGIN or writes are still held back, a statement peewee sent itself would run
    outside the transaction or before the writes it should see: it fails loudly instead."""
    from gcl_server.database import db, defer, execute
    from gcl_server.tx import transactional

    if db.obj.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only (GCL_TEST_DATABASE=postgresql): SQLite sends every statement at once")

    @transactional
    def peewee_first():
        return db.obj.execute_sql("SELECT 1").fetchone()[0]  # the BEGIN is still held back

    @transactional
    def peewee_after_a_deferred_write(name):
        execute("SELECT 1")
        defer("UPDATE concurrency_limit SET updated = updated WHERE name = ?", (name,))
        return db.obj.execute_sql("SELECT 1").fetchone()[0]

    @transactional
    def peewee_once_everything_went_out():
        execute("SELECT 1")
        return db.obj.execute_sql("SELECT 1").fetchone()[0]

    with app.app_context():
        with pytest.raises(RuntimeError, match="deferred statements"):
            peewee_first()
        with pytest.raises(RuntimeError, match="deferred statements"):
            peewee_after_a_deferred_write("nothing")
        assert peewee_once_everything_went_out() == 1
        db.obj.dialect.release_connection()
