"""API keys and the scope each view declares (read < acquire < admin, or public). Keys are never logged.

Every view says what it needs with `@blp.requires(scope)` on a `Blueprint` from this module; that one declaration
is enforced here (and by any path that bypasses Flask's routing, which asks `declared_scope`) and documented in the
OpenAPI document (bearer security, 401 and 403). A view that declares nothing needs admin: closed by default.
"""

import base64
import hashlib
import hmac

from flask import current_app, g, has_request_context, request
from flask_smorest import Blueprint as SmorestBlueprint

from .errors import ErrorSchema, envelope

PUBLIC = "public"
RANK = {"read": 0, "acquire": 1, "admin": 2}
SCOPES = (PUBLIC, *RANK)
UNDECLARED = "admin"  # a view that declares no scope is closed to all but admin keys
PUBLIC_BLUEPRINTS = ("api-docs",)  # flask-smorest's own: the OpenAPI document and its Swagger page


class Blueprint(SmorestBlueprint):
    """flask-smorest's Blueprint with per-view scopes.

    scope: the scope of every route of this blueprint that declares none itself (e.g. its static files)."""

    def __init__(self, *args, scope=None, **kwargs):
        super().__init__(*args, **kwargs)
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.default_scope = scope

    def requires(self, scope):
        """Declare the scope a view method needs: enforced on every request, shown in the OpenAPI document."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")

        def decorator(fn):
            if scope == PUBLIC:
                fn = self.doc(security=[])(fn)  # the document's default is the bearer key (SECURITY below)
            else:
                fn = self._error(fn, 401, "No valid API key (bearer)")
                fn = self._error(fn, 403, f"The API key's scope does not allow this (it needs {scope})")
                fn = self._error(fn, 503, "The database is busy or unreachable: try again after Retry-After")
            parameters = getattr(fn, "_apidoc", {}).get("arguments", {}).get("parameters", [])
            if any(parameter["in"] == "json" for parameter in parameters):
                fn = self._error(fn, 400, "The body is not JSON")
                fn = self._error(fn, 413, "The body is too large")
            fn.gcl_scope = scope
            return fn

        return decorator

    def _error(self, fn, status, description):
        """Document an error answer (in the one envelope) unless the view documents that status itself."""
        documented = getattr(fn, "_apidoc", {}).get("response", {}).get("responses", {})
        if status in documented:
            return fn
        return self.alt_response(status, schema=ErrorSchema, description=description)(fn)


def security(keys):
    """The OpenAPI document's default security, for every operation that is not public: a bearer key, which a server
    without keys does not require (an empty alternative says so, so the document is true of the server serving it)."""
    return [{"bearer": []}] if keys else [{"bearer": []}, {}]


def declared_scope(app, endpoint, method):
    """The scope a request to this endpoint with this method needs, as its view declares it."""
    view = app.view_functions.get(endpoint) if endpoint else None
    if view is None:
        return "read"  # no such route (404 / 405): any valid key may learn that, nobody without one
    if endpoint.partition(".")[0] in PUBLIC_BLUEPRINTS or endpoint.rpartition(".")[2] == "static":
        return PUBLIC  # the API's description and static assets (scripts, styles) are no secret
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        if method == "OPTIONS":
            return "read"  # answered by Flask itself: the allowed methods
        view = getattr(view_class, "get" if method == "HEAD" else method.lower(), None)
    scope = getattr(view, "gcl_scope", None)
    if scope is None:
        blueprint = app.blueprints.get(endpoint.rpartition(".")[0])
        scope = getattr(blueprint, "default_scope", None)
    return scope or UNDECLARED


def scope_for_path(app, path, method):
    """The declared scope of the view a path and method route to (for a layer in front of Flask's routing)."""
    endpoint, _ = app.url_map.bind("localhost").match(path, method=method)
    return declared_scope(app, endpoint, method)


def _key_of(token, keys):
    for key in keys:
        if hmac.compare_digest(token.encode(), key.encode()):
            return key
    return None


def key_of_header(authorization, keys):
    """The API key an Authorization header carries, None when it carries no valid one: `Bearer <key>`, or Basic
    credentials whose password is the key (Prefect's clients send PREFECT_API_AUTH_STRING so, WebSocket included)."""
    scheme, _, token = authorization.partition(" ")
    token, scheme = token.strip(), scheme.lower()
    if scheme == "basic" and token:
        try:
            token = base64.b64decode(token, validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    elif scheme != "bearer":
        return None
    return _key_of(token, keys) if token else None


def scope_of_header(authorization, keys):
    """The scope of the API key in an Authorization header, None when it carries no valid key."""
    key = key_of_header(authorization, keys)
    return None if key is None else keys[key]


def allows(scope, needed):
    return needed == PUBLIC or RANK[scope] >= RANK[needed]


def fingerprint(key):
    """How a key is named in records and logs: never the key itself."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:8]


def actor():
    """Who makes the current request: a key's fingerprint, or "anonymous" when the server has no keys."""
    return getattr(g, "gcl_actor", "anonymous") if has_request_context() else None


def scope():
    """The scope of the current request's key (admin when the server has no keys)."""
    return getattr(g, "gcl_scope", "admin") if has_request_context() else "admin"


def check_api_key():
    keys = current_app.config["API_KEYS"]
    needed = declared_scope(current_app, request.endpoint, request.method)
    if not keys or needed == PUBLIC:
        return None
    key = key_of_header(request.headers.get("Authorization", ""), keys)
    if key is None:
        response = envelope(401, "Unauthorized", "A valid API key is required: Authorization: Bearer <key>.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="gcl"'
        return response
    g.gcl_actor, g.gcl_scope = fingerprint(key), keys[key]
    if not allows(keys[key], needed):
        return envelope(403, "Forbidden", f"This API key's scope ({keys[key]}) does not allow this action ({needed}).")
    return None
