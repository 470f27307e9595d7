"""The web UI's HTML shell, its static assets (URLs carry a content hash) and a self-hosted Swagger UI."""

import functools
import gzip
import hashlib
import mimetypes
from pathlib import Path

from flask import abort, make_response, render_template, request, send_from_directory, url_for

from .. import auth

STATIC = Path(__file__).parent / "static"
SWAGGER_UI = "vendor/swagger-ui-5.35.0"
YEAR = 365 * 24 * 3600
COMPRESSIBLE = (".js", ".css", ".svg")

# The shell runs only its own script: no inline code, nothing from another origin.
SHELL_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Swagger UI sets inline styles and shows data: images.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

# Public like /api/health: the shell, its assets and the API description hold no data (the data routes need read).
# Each view says so itself too (the blueprint's default only backs that up).
shell = auth.Blueprint("ui", __name__, template_folder="templates", scope=auth.PUBLIC)


@functools.cache
def asset_version(filename):
    """A short hash of the asset's content: the URL changes whenever the file does."""
    path = (STATIC / filename).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
        raise FileNotFoundError(filename)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def asset_url(filename):
    return url_for("ui.static_asset", version=asset_version(filename), filename=filename)


@shell.app_context_processor
def _assets():
    return {"asset_url": asset_url}


def _page(template, csp, **context):
    response = make_response(render_template(template, **context))
    response.headers["Content-Security-Policy"] = csp
    response.headers["Cache-Control"] = "no-cache"  # the shell is small; it names the current asset versions
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@shell.get("/")
@shell.get("/ui/")
@shell.get("/ui/limits/<string:name>")
@shell.requires(auth.PUBLIC)
def page(name=None):
    """The Concurrency page (list, or one limit): one HTML shell, the data comes from /api/ui."""
    return _page("ui.html", SHELL_CSP)


@shell.get("/api/docs")
@shell.requires(auth.PUBLIC)
def docs():
    """Swagger UI on the OpenAPI document, from assets served here; Authorize takes a bearer key."""
    return _page("docs.html", DOCS_CSP, swagger=SWAGGER_UI)


@functools.cache
def gzipped(filename):
    """The asset compressed once per process (Swagger UI's bundle: 1.7 MB -> ~0.5 MB over the wire)."""
    return gzip.compress((STATIC / filename).read_bytes(), compresslevel=9, mtime=0)


@shell.get("/ui/static/<string:version>/<path:filename>")
@shell.requires(auth.PUBLIC)
def static_asset(version, filename):
    try:
        current = asset_version(filename)
    except (FileNotFoundError, ValueError):
        abort(404)
    if filename.endswith(COMPRESSIBLE) and "gzip" in request.accept_encodings:
        response = make_response(gzipped(filename))
        response.mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        response.content_encoding = "gzip"
    else:
        response = send_from_directory(STATIC, filename, max_age=0)
    response.vary.add("Accept-Encoding")
    response.headers["X-Content-Type-Options"] = "nosniff"
    if version == current:
        response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    else:  # an older or newer shell asked: serve what we have, but let nobody keep it
        response.headers["Cache-Control"] = "no-cache"
    return response
