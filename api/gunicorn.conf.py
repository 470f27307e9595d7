"""Gunicorn settings for `make run` (the same file `gcl-server serve` uses)."""

from gcl_server.serving.gunicorn_conf import *  # noqa: F403
