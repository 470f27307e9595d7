"""Compact reads for the web UI: a page of the list, or one limit with everything its page shows, in one request."""

import gzip

from flask import current_app, request
from flask.views import MethodView

from .. import auth
from ..auth import Blueprint
from . import summary
from .schemas import UiDetailSchema, UiPageQuerySchema, UiPageSchema, UiSessionSchema

blp = Blueprint("ui-data", __name__, url_prefix="/api/ui", description="Compact reads for the web UI")
GZIP_FROM_BYTES = 1024  # a page of 50 limits: ~12 kB of JSON, ~2 kB gzipped, every second per open tab


@blp.after_request
def _compress(response):
    """The page asks every second: its JSON travels gzipped when the browser accepts it."""
    response.vary.add("Accept-Encoding")
    if (
        response.status_code == 200
        and response.content_length is not None
        and response.content_length >= GZIP_FROM_BYTES
        and "gzip" in request.accept_encodings
        and not response.direct_passthrough
    ):
        response.set_data(gzip.compress(response.get_data(), compresslevel=5, mtime=0))
        response.content_encoding = "gzip"
    return response


@blp.route("/session")
class Session(MethodView):
    @blp.requires(auth.PUBLIC)
    @blp.response(200, UiSessionSchema)
    def get(self):
        """Whether the server needs a key, and the scope of the key sent (the page hides what it does not allow)"""
        keys = current_app.config["API_KEYS"]
        if not keys:
            return {"keys_required": False, "scope": "admin"}
        return {"keys_required": True, "scope": auth.scope_of_header(request.headers.get("Authorization", ""), keys)}


@blp.route("/limits")
class Page(MethodView):
    @blp.requires("read")
    @blp.arguments(UiPageQuerySchema(), location="query")
    @blp.response(200, UiPageSchema)
    def get(self, query):
        """One page of limits with live occupancy and queue length: the whole list's refresh in one request"""
        return summary.page(
            q=query["q"],
            sort=query["sort"],
            descending=query["order"] == "desc",
            offset=query["offset"],
            limit=query["limit"],
        )


@blp.route("/limits/<string:id_or_name>")
class Detail(MethodView):
    @blp.requires("read")
    @blp.response(200, UiDetailSchema)
    @blp.alt_response(404, description="No such limit")
    def get(self, id_or_name):
        """One limit, its live leases (ids to admin keys only), its queue, recent activity and achieved rate"""
        return summary.detail(id_or_name, with_lease_ids=auth.scope() == "admin")
