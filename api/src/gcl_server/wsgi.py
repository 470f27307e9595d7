"""Gunicorn target: app = create_app()."""

from . import create_app

app = create_app()
