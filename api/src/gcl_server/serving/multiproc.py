"""The directory prometheus_client's multiprocess mode shares between gunicorn's workers: fresh for each master."""

import contextlib
import os
import shutil
import tempfile

from .. import settings

PREFIX = "gcl-metrics-"


def prepare():
    """Point the workers (forked after this) at a new, empty directory: counts start at zero with the server and
    survive worker restarts, never a previous run's. Directories that killed masters left behind go first."""
    remove_orphans()
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    settings.hand_down("PROMETHEUS_MULTIPROC_DIR", path)
    return path


def cleanup(path):
    if path:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(base=None):
    """Remove the directories of masters that no longer run (a SIGKILLed master never runs its on_exit)."""
    base = base or tempfile.gettempdir()
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            pid = entry.name[len(PREFIX) :].partition("-")[0] if entry.name.startswith(PREFIX) else ""
            if pid.isdigit() and entry.is_dir(follow_symlinks=False) and not _alive(int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)
