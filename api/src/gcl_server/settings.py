"""Server settings: defaults, overridden by GCL_* environment variables, overridden by explicit config."""

import os

DEFAULTS = {
    "DATABASE_URL": None,  # None: sqlite file under DATA_DIR
    "DATA_DIR": "data",
    "API_KEYS": "",  # "key1,key2:read,key3:acquire"
    "LEASE_DEFAULT_SECONDS": 300.0,
    "LEASE_MIN_SECONDS": 60.0,
    "LEASE_MAX_SECONDS": 86400.0,
    "UNLEASED_TTL_SECONDS": 86400.0,
    "SWEEP_INTERVAL_SECONDS": 1.0,
    "SWEEPER": True,
    "ACTIVITY_KEEP_PER_LIMIT": 1000,  # the sweeper keeps this many activity records per limit ...
    "ACTIVITY_MAX_AGE_DAYS": 7.0,  # ... none older than this
    "MAX_WAIT_SECONDS": 30.0,
    "MAX_WAITERS": 0,  # parked requests per worker process; 0: the worker's threads less a reserve
    "THREADS": 256,
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "FAST_PATH": True,  # serve plainly valid hot slot requests without Flask (fast/)
    "LEAN_HTTP": True,  # parse plain kept-alive requests with httptools (serving/h1.py, serving/worker.py)
    "SQLITE_WRITER": True,  # SQLite under gunicorn: one writer process runs the write transactions (sqlite/)
    "SQLITE_CHECKPOINTER": False,  # set by the serving layer for its workers: the writer copies the WAL back
    "NOTIFY_HOST": "127.0.0.1",  # where this process receives wake-ups for its parked requests (SQLite)
    "LOG_LEVEL": "info",
    # Serving (serving/gunicorn_conf.py):
    "HOST": "127.0.0.1",
    "PORT": 4280,
    "WORKERS": 2,
    "MAX_CONNECTIONS": 4096,  # per worker; beyond: 503 + Retry-After
    "KEEPALIVE_SECONDS": 30,  # an idle kept-alive connection closes after this
    "HEAD_TIMEOUT_SECONDS": 5.0,  # a request must arrive whole this long after its first byte (serving/connections.py)
    "ACCESS_LOG": "",  # "-": requests to stdout
    "CONTROL_SOCKET": "",  # gunicorn's control socket; none by default (one shared path per user)
    "LOG_FORMAT": "text",  # "json": one JSON object per log line, and a line per request (telemetry/logs.py)
    # Read from the environment under other tools' names:
    "SCRIPT_NAME": "",  # the WSGI mount point gunicorn applies; set, the lean HTTP path stands aside
    "PROMETHEUS_MULTIPROC_DIR": "",  # set by the serving layer for its workers: where their metrics meet
}


def _flag(value):
    return value.lower() not in ("0", "false", "no", "off")


def _positive(value):
    number = float(value)
    if not number > 0:
        raise ValueError("must be > 0")
    return number


def _log_format(value):
    if value not in ("text", "json"):
        raise ValueError("use text or json")
    return value


# setting -> (environment variable, parser)
ENVIRONMENT = {
    "DATABASE_URL": ("DATABASE_URL", str),
    "DATA_DIR": ("GCL_DATA_DIR", str),
    "API_KEYS": ("GCL_API_KEYS", str),
    "LEASE_MIN_SECONDS": ("GCL_LEASE_MIN_SECONDS", float),
    "UNLEASED_TTL_SECONDS": ("GCL_UNLEASED_TTL_SECONDS", float),
    "SWEEP_INTERVAL_SECONDS": ("GCL_SWEEP_INTERVAL_SECONDS", float),
    "SWEEPER": ("GCL_SWEEPER", _flag),
    "ACTIVITY_KEEP_PER_LIMIT": ("GCL_ACTIVITY_KEEP_PER_LIMIT", int),
    "ACTIVITY_MAX_AGE_DAYS": ("GCL_ACTIVITY_MAX_AGE_DAYS", float),
    "MAX_WAIT_SECONDS": ("GCL_MAX_WAIT_SECONDS", float),
    "MAX_WAITERS": ("GCL_MAX_WAITERS", int),
    "THREADS": ("GCL_THREADS", int),
    "FAST_PATH": ("GCL_FAST_PATH", _flag),
    "LEAN_HTTP": ("GCL_LEAN_HTTP", _flag),
    "SQLITE_WRITER": ("GCL_SQLITE_WRITER", _flag),
    "SQLITE_CHECKPOINTER": ("GCL_SQLITE_CHECKPOINTER", _flag),
    "NOTIFY_HOST": ("GCL_NOTIFY_HOST", str),
    "LOG_LEVEL": ("GCL_LOG_LEVEL", str),
    "HOST": ("GCL_HOST", str),
    "PORT": ("GCL_PORT", int),
    "WORKERS": ("GCL_WORKERS", int),
    "MAX_CONNECTIONS": ("GCL_MAX_CONNECTIONS", int),
    "KEEPALIVE_SECONDS": ("GCL_KEEPALIVE_SECONDS", int),
    "HEAD_TIMEOUT_SECONDS": ("GCL_HEAD_TIMEOUT_SECONDS", _positive),
    "ACCESS_LOG": ("GCL_ACCESS_LOG", str),
    "CONTROL_SOCKET": ("GCL_CONTROL_SOCKET", str),
    "LOG_FORMAT": ("GCL_LOG_FORMAT", _log_format),
    "SCRIPT_NAME": ("SCRIPT_NAME", str),
    "PROMETHEUS_MULTIPROC_DIR": ("PROMETHEUS_MULTIPROC_DIR", str),
}


class SettingsError(ValueError):
    """A setting from the environment could not be parsed."""


def load(explicit=None, environ=None):
    """Return the settings dict: defaults < environment < explicit."""
    environ = os.environ if environ is None else environ
    settings = dict(DEFAULTS)
    for key, (var, parse) in ENVIRONMENT.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            settings[key] = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{var}={raw!r} is not valid: {exc}") from exc
    settings.update(explicit or {})
    if not settings["DATABASE_URL"]:
        settings["DATABASE_URL"] = default_database_url(settings["DATA_DIR"])
    settings["API_KEYS"] = parse_api_keys(settings["API_KEYS"])
    if not settings["MAX_WAITERS"]:
        # Parked requests hold a gthread thread each: keep a reserve so releases are always served.
        settings["MAX_WAITERS"] = max(1, settings["THREADS"] - max(8, settings["THREADS"] // 8))
    return settings


def hand_down(key, value):
    """Give a setting to the processes this one forks from now on (gunicorn's workers), through the variable their
    settings read (and, for PROMETHEUS_MULTIPROC_DIR, prometheus_client reads)."""
    os.environ[ENVIRONMENT[key][0]] = value


def default_database_url(data_dir):
    return f"sqlite:///{os.path.abspath(os.path.join(data_dir, 'gcl.db'))}"


SCOPES = ("read", "acquire", "admin")


def parse_api_keys(value):
    """Parse "key[:scope],..." into {key: scope}; a dict passes through."""
    if isinstance(value, dict):
        return dict(value)
    keys = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, scope = item.partition(":")
        scope = scope or "admin"
        if scope not in SCOPES:
            raise SettingsError(f"GCL_API_KEYS: unknown scope {scope!r} (use one of {', '.join(SCOPES)})")
        keys[key] = scope
    return keys
