"""gunicorn's side of the logs: its access format without the user name, and its logger in JSON (GCL_LOG_FORMAT)."""

from gunicorn import glogging

from ..telemetry.logs import use_json

# gunicorn's default access format less %(u)s: the user name of Basic credentials, which may be an API key.
ACCESS_LOG_FORMAT = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class JsonLogger(glogging.Logger):
    """gunicorn's logger with JSON lines (gunicorn's logger_class with GCL_LOG_FORMAT=json); its workers inherit
    the set-up. It changes no behaviour but the format, so the worker's lean HTTP path stays on."""

    def setup(self, cfg):
        super().setup(cfg)
        use_json(cfg.loglevel)
