"""GCL control plane: create_app(config=None)."""

from flask import Flask


def create_app(config=None):
    """Build the Flask app: settings (defaults < GCL_* env < config), database (not connected), routes.

    No side effects: no migration, no thread (the serving layer starts those: serving/)."""
    # Lazy on purpose: gunicorn's master imports gcl_server before it sets up prometheus_client's multiprocess mode.
    from flask_smorest import Api as SmorestApi

    from . import auth, errors, settings, ui
    from .database import connection_hooks, db, open_database
    from .fast import FastSlots
    from .resources.fields import SchemaRules
    from .resources.health.routes import blp as health_blp
    from .resources.health.routes import metrics_blp
    from .resources.limits.routes import blp as limits_blp
    from .resources.prefect.routes import blp as prefect_blp
    from .resources.slots.routes import blp as slots_blp
    from .services import notify
    from .telemetry import middleware as telemetry

    app = Flask(__name__)
    app.config.update(settings.load(config))
    app.config.update(
        API_TITLE="GCL",
        API_VERSION="v2",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Global concurrency limits and rate limits (Prefect-compatible API)."},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": auth.security(app.config["API_KEYS"]),
        },
    )
    db.initialize(open_database(app.config["DATABASE_URL"], checkpointer=app.config["SQLITE_CHECKPOINTER"]))
    notify.configure(app.config["NOTIFY_HOST"])
    connection_hooks(app)

    class Api(SmorestApi):
        ERROR_SCHEMA = errors.ErrorSchema  # the envelope every error really carries

    api = Api(app, spec_kwargs={"extra_plugins": [SchemaRules()]})  # rules across fields, on their schemas
    for blueprint in (limits_blp, slots_blp, health_blp, metrics_blp, prefect_blp):
        api.register_blueprint(blueprint)
    ui.register(app, api)  # the Concurrency page at / and /ui/..., Swagger UI (vendored, pinned) at /api/docs
    errors.register(app)
    app.before_request(auth.check_api_key)
    if app.config["FAST_PATH"]:
        app.wsgi_app = FastSlots(app, app.wsgi_app)
    telemetry.install(app)  # outermost: per-route metrics and request logs cover the fast path too
    return app
