"""The directory prometheus_client's multiprocess mode shares between gunicorn's workers: fresh for each master."""

import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare():
    """Point the workers (forked after this) at a new, empty directory: counts start at zero with the server and
    survive worker restarts, never a previous run's."""
    path = tempfile.mkdtemp(prefix="gcl-metrics-")
    os.environ[ENV] = path
    return path


def cleanup(path):
    if path:
        shutil.rmtree(path, ignore_errors=True)
