"""Optional API-key auth with scopes: read < acquire < admin. Keys are never logged."""

import hmac

from flask import current_app, request

from .errors import envelope

OPEN_PATHS = ("/api/health",)
ACQUIRE_SUFFIXES = ("/increment", "/increment-with-lease", "/decrement", "/decrement-with-lease", "/renew")
RANK = {"read": 0, "acquire": 1, "admin": 2}


def required_scope():
    if request.method in ("GET", "HEAD", "OPTIONS") or request.path.endswith("/concurrency_limits/filter"):
        return "read"
    if request.method == "POST" and request.path.endswith(ACQUIRE_SUFFIXES):
        return "acquire"
    if request.method == "DELETE" and "/concurrency_limits/waiters/" in request.path:
        return "acquire"
    return "admin"


def _scope_of(token, keys):
    for key, scope in keys.items():
        if hmac.compare_digest(token.encode(), key.encode()):
            return scope
    return None


def scope_of_header(authorization, keys):
    """The scope of the API key in an Authorization header, None when it carries no valid key."""
    scheme, _, token = authorization.partition(" ")
    return _scope_of(token.strip(), keys) if scheme.lower() == "bearer" and token.strip() else None


def allows(scope, needed):
    return RANK[scope] >= RANK[needed]


def check_api_key():
    keys = current_app.config["API_KEYS"]
    if not keys or request.path in OPEN_PATHS:
        return None
    scope = scope_of_header(request.headers.get("Authorization", ""), keys)
    if scope is None:
        response = envelope(401, "Unauthorized", "A valid API key is required: Authorization: Bearer <key>.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="gcl"'
        return response
    needed = required_scope()
    if not allows(scope, needed):
        return envelope(403, "Forbidden", f"This API key's scope ({scope}) does not allow this action ({needed}).")
    return None
