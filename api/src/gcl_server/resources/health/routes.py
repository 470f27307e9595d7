"""Liveness, readiness and Prometheus metrics."""

from flask import Response
from flask.views import MethodView
from prometheus_client import CONTENT_TYPE_LATEST

from ...auth import Blueprint
from ...database import db
from ...migrations import LATEST_VERSION, current_version
from ...telemetry import metrics
from ...version import VERSION

blp = Blueprint("health", __name__, url_prefix="/api", description="Health and readiness")
metrics_blp = Blueprint("metrics", __name__, description="Prometheus metrics")


@blp.route("/health")
class Health(MethodView):
    @blp.requires("public")
    @blp.response(200)
    def get(self):
        """The process is up"""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.requires("read")
    @blp.response(200)
    @blp.alt_response(503, description="Database unreachable or schema not migrated")
    def get(self):
        """The database answers and the schema is current"""
        try:
            version = current_version(db.obj)
        except Exception as exc:  # any driver error means "not ready", never a 500
            return {"status": "unavailable", "reason": type(exc).__name__}, 503
        if version != LATEST_VERSION:
            return {"status": "migrating", "schema_version": version, "expected": LATEST_VERSION}, 503
        return {"status": "ready", "schema_version": version, "database": db.obj.dialect.name, "version": VERSION}


@metrics_blp.route("/metrics")
class Metrics(MethodView):
    @metrics_blp.requires("read")
    @metrics_blp.response(200)
    def get(self):
        """Prometheus metrics, computed from the database (the same on every worker and node)"""
        return Response(metrics.scrape(), mimetype=CONTENT_TYPE_LATEST)
