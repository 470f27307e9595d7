"""JSON logs (GCL_LOG_FORMAT=json): one object per line; request lines carry no header, so never a key."""

import datetime as dt
import json
import logging
import sys

FORMATS = ("text", "json")
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """ts, level, logger, message, then whatever the call passed as `extra` (request_id, route, status, ...)."""

    def format(self, record):
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def use_json(level="info"):
    """Format every log line of this process as JSON: gunicorn's handlers keep their streams, the rest goes to
    stderr through the root logger."""
    formatter = JsonFormatter()
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
    root = logging.getLogger()
    if not any(getattr(handler, "_gcl_json", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._gcl_json = True
        root.addHandler(handler)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(level.upper())
    # gunicorn.error has its own handler: its lines must not reach the root's a second time.
    logging.getLogger("gunicorn.error").propagate = False
    logging.getLogger("gunicorn.access").propagate = False
