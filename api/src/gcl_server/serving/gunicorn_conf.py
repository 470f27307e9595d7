"""Gunicorn settings for `make run`; every value can be overridden from the environment (read by settings.py)."""

from gcl_server import settings
from gcl_server.serving import lifecycle
from gcl_server.serving import logs as _logs
from gcl_server.serving import multiproc as _multiproc

_settings = settings.load()
bind = f"{_settings['HOST']}:{_settings['PORT']}"
workers = _settings["WORKERS"]
# gthread (server-side waiting parks a request on a thread, not a whole process), with kept-alive connections
# served by the thread that answered them (serving/worker.py).
# serving/connections.py wraps it: threads only see requests that arrived whole (GCL_HEAD_TIMEOUT_SECONDS).
worker_class = "gcl_server.serving.connections.GuardedWorker"
threads = _settings["THREADS"]
worker_connections = _settings["MAX_CONNECTIONS"]  # per worker; beyond: 503 + Retry-After
timeout = 60
graceful_timeout = 10
keepalive = _settings["KEEPALIVE_SECONDS"]  # an idle kept-alive connection closes after this
accesslog = _settings["ACCESS_LOG"] or None
access_log_format = _logs.ACCESS_LOG_FORMAT  # without the Basic user name, which may be a key
loglevel = _settings["LOG_LEVEL"]
# GCL_LOG_FORMAT=json: every line gunicorn writes is JSON too, from its first ("Starting gunicorn").
if _settings["LOG_FORMAT"] == "json":
    logger_class = "gcl_server.serving.logs.JsonLogger"
wsgi_app = "gcl_server.wsgi:app"
# gunicorn's control socket lives at one shared path per user: several servers on one host would clobber it.
control_socket_disable = not _settings["CONTROL_SOCKET"]
if not control_socket_disable:
    control_socket = _settings["CONTROL_SOCKET"]


def on_starting(server):
    # Prometheus counts of all workers meet in one fresh directory (telemetry/metrics.py).
    server.gcl_metrics_dir = _multiproc.prepare()
    # Migrate once in the master so workers never race on a fresh database; SQLite: start the writer before forking.
    server.gcl_writer = lifecycle.prepare(_settings)


def post_fork(server, worker):
    writer = getattr(server, "gcl_writer", None)
    worker.gcl_writer_path = writer.path if writer is not None else None


def post_worker_init(worker):
    # The worker's own side effects (create_app has none): its transaction runner and its sweeper thread.
    lifecycle.start_worker(worker.wsgi, getattr(worker, "gcl_writer_path", None))


def on_exit(server):
    _multiproc.cleanup(getattr(server, "gcl_metrics_dir", None))
    proc = getattr(server, "gcl_writer", None)
    if proc is not None:
        proc.stop()
