"""Limits CRUD, Prefect-compatible, plus declarative PUT, ETags, reset and lease listing."""

from flask.views import MethodView

from ... import activity, auth
from ...auth import Blueprint
from ...services import limits as service
from ...services import slots as engine
from ...services import waiting
from .schemas import (
    ActivityQuerySchema,
    ActivitySchema,
    IfMatchSchema,
    LeaseSchema,
    LimitCreateSchema,
    LimitFilterSchema,
    LimitPutSchema,
    LimitSchema,
    LimitUpdateSchema,
    NamePathSchema,
    WaiterSchema,
)

blp = Blueprint("limits", __name__, url_prefix="/api/v2/concurrency_limits", description="Global concurrency limits")

ETAG_HEADER = {"ETag": {"description": "Validator of the managed fields", "schema": {"type": "string"}}}


def _lease_ids_for_admin(items):
    """A lease id ends its lease (decrement-with-lease): only admin keys see other clients' ids."""
    return items if auth.scope() == "admin" else [{**item, "lease_id": None} for item in items]


def _with_etag(limit, status=200):
    return limit, status, {"ETag": limit.etag}


@blp.route("/")
class Limits(MethodView):
    @blp.requires("admin")
    @blp.arguments(LimitCreateSchema())
    @blp.response(201, LimitSchema, headers=ETAG_HEADER)
    @blp.alt_response(409, description="A limit with this name exists")
    def post(self, data):
        """Create a limit"""
        return _with_etag(service.create(data, actor=auth.actor()), 201)


@blp.route("/filter")
class LimitFilter(MethodView):
    @blp.requires("read")
    @blp.arguments(LimitFilterSchema(), required=False)  # no body: the first page of every limit
    @blp.response(200, LimitSchema(many=True))
    def post(self, query):
        """List limits ordered by name"""
        return service.list_limits(**query)


@blp.route("/<string:id_or_name>")
class Limit(MethodView):
    @blp.requires("read")
    @blp.response(200, LimitSchema, headers=ETAG_HEADER)
    @blp.alt_response(404, description="No such limit")
    def get(self, id_or_name):
        """Read a limit by id or name"""
        return _with_etag(service.read(id_or_name))

    @blp.requires("admin")
    @blp.arguments(IfMatchSchema(), location="headers")
    @blp.arguments(LimitUpdateSchema())
    @blp.response(204, headers=ETAG_HEADER)
    @blp.alt_response(404, description="No such limit")
    @blp.alt_response(409, description="Rename onto an existing name")
    @blp.alt_response(412, description="If-Match does not match")
    def patch(self, headers, data, id_or_name):
        """Update some fields of a limit

        `{"active_slots": 0}` alone is Prefect's reset: it revokes the limit's leases. Runtime counters sent beside a
        managed field are ignored, so a declarative apply never ends a lease."""
        limit = service.update(id_or_name, data, headers.get("if_match"), actor=auth.actor())
        return None, 204, {"ETag": limit.etag}

    @blp.requires("admin")
    @blp.arguments(IfMatchSchema(), location="headers")
    @blp.arguments(LimitPutSchema())
    @blp.arguments(NamePathSchema(), location="path")
    @blp.response(200, LimitSchema, headers=ETAG_HEADER)
    @blp.alt_response(201, schema=LimitSchema, description="Created")
    @blp.alt_response(412, description="If-Match does not match")
    def put(self, headers, data, path, id_or_name):
        """Create or replace a limit by name (idempotent)"""
        limit, created = service.upsert(path["id_or_name"], data, headers.get("if_match"), actor=auth.actor())
        return _with_etag(limit, 201 if created else 200)

    @blp.requires("admin")
    @blp.arguments(IfMatchSchema(), location="headers")
    @blp.response(204)
    @blp.alt_response(404, description="No such limit")
    @blp.alt_response(412, description="If-Match does not match")
    def delete(self, headers, id_or_name):
        """Delete a limit (its leases are revoked)"""
        service.delete(id_or_name, headers.get("if_match"), actor=auth.actor())


@blp.route("/<string:id_or_name>/reset")
class LimitReset(MethodView):
    @blp.requires("admin")
    @blp.response(200, LimitSchema, headers=ETAG_HEADER)
    @blp.alt_response(404, description="No such limit")
    def post(self, id_or_name):
        """Reset a limit: revoke its leases, clear rate-limit and denied occupancy"""
        return _with_etag(service.reset(id_or_name, actor=auth.actor()))


@blp.route("/<string:id_or_name>/leases")
class LimitLeases(MethodView):
    @blp.requires("read")
    @blp.response(200, LeaseSchema(many=True))
    @blp.alt_response(404, description="No such limit")
    def get(self, id_or_name):
        """Live leases holding a limit, oldest first (lease ids only to admin keys: an id ends its lease)"""
        return _lease_ids_for_admin(engine.leases_of(service.find(id_or_name).id))


@blp.route("/<string:id_or_name>/waiters")
class LimitWaiters(MethodView):
    @blp.requires("read")
    @blp.response(200, WaiterSchema(many=True))
    @blp.alt_response(404, description="No such limit")
    def get(self, id_or_name):
        """Requests waiting on the server for a limit, first in line first"""
        return waiting.queue_of(service.find(id_or_name).id)


@blp.route("/<string:id_or_name>/activity")
class LimitActivity(MethodView):
    @blp.requires("read")
    @blp.arguments(ActivityQuerySchema(), location="query")
    @blp.response(200, ActivitySchema(many=True))
    @blp.alt_response(404, description="No such limit")
    def get(self, query, id_or_name):
        """What happened to a limit and its leases, newest first; page on with `before` = the last id seen"""
        limit_id = service.find(id_or_name).id
        records = activity.history(limit_id, before_id=query.get("before"), limit=query["limit"])
        return _lease_ids_for_admin(records)
