"""Gunicorn settings for `make run`; every value can be overridden from the environment."""

import os

bind = f"{os.environ.get('GCL_HOST', '127.0.0.1')}:{os.environ.get('GCL_PORT', '4280')}"
workers = int(os.environ.get("GCL_WORKERS", "2"))
# gthread (server-side waiting parks a request on a thread, not a whole process), with kept-alive connections
# served by the thread that answered them (gcl_server/worker.py).
worker_class = "gcl_server.worker.KeepAliveThreadWorker"
threads = int(os.environ.get("GCL_THREADS", "256"))
timeout = 60
graceful_timeout = 10
keepalive = 30
accesslog = os.environ.get("GCL_ACCESS_LOG") or None
loglevel = os.environ.get("GCL_LOG_LEVEL", "info")
wsgi_app = "gcl_server.wsgi:app"
# gunicorn's control socket lives at one shared path per user: several servers on one host would clobber it.
control_socket_disable = os.environ.get("GCL_CONTROL_SOCKET", "") == ""
if not control_socket_disable:
    control_socket = os.environ["GCL_CONTROL_SOCKET"]


def on_starting(server):
    # Migrate once in the master so workers never race on a fresh database.
    from gcl_server import writer
    from gcl_server.database import migrate_url
    from gcl_server.settings import load

    url = load()["DATABASE_URL"]
    migrate_url(url)
    if url.startswith("sqlite:") and os.environ.get("GCL_SQLITE_WRITER", "1") != "0":
        server.gcl_writer = writer.start()  # workers fork after this and inherit its address


def on_exit(server):
    proc = getattr(server, "gcl_writer", None)
    if proc is not None:
        proc.stop()
