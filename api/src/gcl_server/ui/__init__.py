"""The web UI (the Concurrency page at / and /ui/...) and a self-hosted Swagger UI at /api/docs."""

from .routes import blp as data_blp
from .views import shell


def register(app, api):
    """The HTML shell and assets are public (like /api/health); the data routes declare read."""
    app.register_blueprint(shell)
    api.register_blueprint(data_blp)
