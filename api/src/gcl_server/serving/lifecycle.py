"""The serving layer's side effects, which create_app leaves out: the migration and the SQLite writer (in the
gunicorn master, before it forks), and each worker's runner and sweeper thread (after it loaded the app)."""

import logging

from .. import settings, tx
from ..database import sqlite_path
from ..migrations import migrate_url
from ..services.sweeper import Sweeper
from ..sqlite import writer

log = logging.getLogger(__name__)


def prepare(own=None):
    """Before serving (gunicorn's master, once): migrate; with SQLite, start the writer. Returns the writer or None."""
    own = own or settings.load()
    url = own["DATABASE_URL"]
    migrate_url(url)
    if not (sqlite_path(url) and own["SQLITE_WRITER"]):
        return None
    proc = writer.start()
    if proc is not None:
        settings.hand_down("SQLITE_CHECKPOINTER", "1")  # the workers fork after this: their commits need not checkpoint
    return proc


def start_worker(app, writer_path=None):
    """In a worker that loaded the app: send contended transactions to the writer; start the sweeper."""
    if writer_path:
        tx.use_runner(writer.Client(writer_path))
    config = app.config
    if config["SWEEPER"]:
        sweeper = Sweeper(
            config["SWEEP_INTERVAL_SECONDS"],
            config["ACTIVITY_KEEP_PER_LIMIT"],
            config["ACTIVITY_MAX_AGE_DAYS"] * 86400,
        )
        app.extensions["gcl_sweeper"] = sweeper.start()
