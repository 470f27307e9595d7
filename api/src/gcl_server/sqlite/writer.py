"""SQLite's single writer: one process runs every write transaction of the server's workers, in batches.

SQLite lets one transaction write at a time. When each gunicorn worker thread ran its own, the write lock passed
between processes and threads for every slot request, and the thread holding it waited for its process's GIL at every
statement (measured on 2 cores: a lock wait of 1.3 ms and a hold of 1.0 ms on average, for 0.5 ms of work). Here the
gunicorn master starts one writer process; workers send it the transactional call (module, function, arguments) over
a Unix socket in a private directory, and it runs whatever has arrived in one transaction, each call in a savepoint of
its own, with one thread, a warm connection and no lock hand-over. The wake-ups a call queues after commit are sent
from here (datagrams to the worker holding the parked request).

Correctness never depends on it: the writer takes the same write lock as a worker would, and a worker that cannot
reach it (not started, stopped, crashed) runs its transactions itself. A call that was sent and got no answer is not
run again (it may have committed): the request fails with 503, which every client retries.
"""

import contextlib
import importlib
import logging
import os
import pickle
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from .. import events, tx
from ..database import db, open_database
from ..errors import Unavailable
from ..settings import load

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
MAX_FRAME = 16 * 1024 * 1024
RETRY_CONNECT_SECONDS = 1.0
CHECKPOINT_SECONDS = 0.1


# ------------------------------------------------------------------------------------------------ the worker's side


class Client:
    """One connection per thread to the writer; calls block until their transaction committed (or failed)."""

    def __init__(self, path):
        self.path = path
        self._local = threading.local()
        self._down_until = 0.0

    def _connection(self):
        sock = getattr(self._local, "sock", None)
        if sock is not None and _open(sock):
            return sock
        self._drop()
        if time.monotonic() < self._down_until:
            raise tx.Undelivered(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            if not self._down_until:
                log.warning("the SQLite writer is unreachable (%s); this worker runs its transactions itself", exc)
            self._down_until = time.monotonic() + RETRY_CONNECT_SECONDS
            raise tx.Undelivered(self.path) from exc
        self._local.sock = sock
        return sock

    def _drop(self):
        sock = getattr(self._local, "sock", None)
        self._local.sock = None
        if sock is not None:
            sock.close()

    def call(self, fn, args, kwargs):
        """The function's result as the writer ran it; its exception re-raised here."""
        data = pickle.dumps((fn.__module__, fn.__qualname__, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        sock = self._connection()
        try:
            sock.sendall(HEADER.pack(len(data)) + data)
        except OSError as exc:
            # Not (completely) delivered: a partial frame is never run, so running it here is safe.
            self._drop()
            raise tx.Undelivered(self.path) from exc
        try:
            (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
            ok, value, committed_events = pickle.loads(_recv_exactly(sock, size))
        except (OSError, EOFError) as exc:
            self._drop()
            log.warning("the writer did not answer; the request fails (it may have committed)")
            raise Unavailable("The database writer restarted; try again.", retry_after=0.2) from exc
        if ok:
            events.emit_all(committed_events)
            return value
        raise value


def _open(sock):
    """False when the writer closed this connection (it never speaks unasked: anything readable is the end)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _recv_exactly(sock, size):
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------------ the writer


def _function(module, qualname, cache={}):  # noqa: B006 - a deliberate per-process cache
    fn = cache.get((module, qualname))
    if fn is None:
        if not module.startswith("gcl_server."):
            raise ValueError(f"not a GCL function: {module}.{qualname}")
        target = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        fn = cache[(module, qualname)] = getattr(target, "__wrapped__", target)
    return fn


def _run_batch(batch):
    """Run the calls in one write transaction; [(conn, (ok, value))] and the after-commit work.

    Several calls run each in a savepoint, so one that fails leaves the others; a call alone is the transaction, and
    its failure rolls it back, as in the worker's own transactions."""
    dialect = db.obj.dialect
    single = len(batch) == 1
    for attempt in range(tx.TX_ATTEMPTS):
        results, callbacks = [], []
        try:
            with dialect.write_tx():
                for conn, (module, qualname, args, kwargs) in batch:
                    try:
                        fn = _function(module, qualname)
                        with tx.running() as call, contextlib.nullcontext() if single else db.atomic():
                            value = fn(*args, **kwargs)
                        # The events go back with the result: they are emitted in the worker serving the request.
                        results.append((conn, (True, value, call.events)))
                        callbacks.extend(call.callbacks)
                    except Exception as exc:
                        if single or dialect.is_retryable(exc):
                            raise
                        results.append((conn, (False, exc, ())))  # the caller's error, raised in the caller
            return results, callbacks
        except Exception as exc:
            if dialect.is_retryable(exc) and attempt < tx.TX_ATTEMPTS - 1:
                time.sleep(0.005 * (attempt + 1))
                continue
            if single and not dialect.is_retryable(exc):
                return [(batch[0][0], (False, exc, ()))], []  # its own error; the transaction rolled back
            log.exception("write transaction failed")
            failure = Unavailable("The database is busy; try again.", retry_after=0.2)
            return [(conn, (False, failure, ())) for conn, _ in batch], []
    raise AssertionError("unreachable")


def _reply(conn, outcome):
    try:
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - an unpicklable result or error
        data = pickle.dumps((False, RuntimeError(f"unpicklable outcome: {exc!r}"), ()))
    try:
        conn.setblocking(True)
        conn.sendall(HEADER.pack(len(data)) + data)
        conn.setblocking(False)
    except OSError:
        pass  # the worker went away; its request fails there


def serve(path, parent_pid):
    """The writer's loop: read whole frames from every connection, run what arrived as one batch, answer."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    buffers = {}
    while os.getppid() == parent_pid:
        batch = []
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                buffers[conn] = bytearray()
                selector.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                buffers.pop(sock, None)
                sock.close()
                continue
            buffer = buffers[sock]
            buffer += data
            while len(buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer)
                if size > MAX_FRAME:
                    buffer.clear()
                    break
                if len(buffer) < HEADER.size + size:
                    break
                frame = bytes(buffer[HEADER.size : HEADER.size + size])
                del buffer[: HEADER.size + size]
                try:
                    batch.append((sock, pickle.loads(frame)))
                except Exception as exc:  # noqa: BLE001
                    _reply(sock, (False, RuntimeError(f"undecodable call: {exc!r}"), ()))
        if batch:
            results, callbacks = _run_batch(batch)
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a wake-up is a hint; the waiter re-checks on its own
                    log.exception("after-commit callback failed")
            for conn, outcome in results:
                _reply(conn, outcome)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path, parent_pid = argv[0], int(argv[1])
    settings = load()
    logging.basicConfig(level=settings["LOG_LEVEL"].upper(), format="[writer] %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the master stops us
    # Our connections leave checkpoints to our checkpointer thread.
    database = open_database(settings["DATABASE_URL"], checkpointer=True)
    db.initialize(database)
    threading.Thread(target=checkpointer, args=(parent_pid,), name="gcl-checkpointer", daemon=True).start()
    try:
        serve(path, parent_pid)
    finally:
        database.close()


def checkpointer(parent_pid, interval=CHECKPOINT_SECONDS):
    """Copy the WAL into the database every interval, off the transactions' path (Dialect.checkpoint)."""
    while os.getppid() == parent_pid:
        try:
            db.obj.dialect.checkpoint()
        except Exception:  # noqa: BLE001 - retried next interval; committing transactions checkpoint as a safety net
            log.exception("WAL checkpoint failed")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------ the master's side


class Process:
    """The writer process, started by the gunicorn master (before it forks workers, which inherit ENV)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gcl-")  # 0700: only this user may connect
        self.path = os.path.join(self.dir, "writer.sock")
        self.proc = subprocess.Popen([sys.executable, "-m", "gcl_server.sqlite.writer", self.path, str(os.getpid())])

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                return True
            except OSError:
                time.sleep(0.02)
            finally:
                probe.close()
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start():
    """Start the writer (the gunicorn master does, before it forks its workers): the Process, or None."""
    try:
        proc = Process()
    except OSError as exc:  # no private directory or no process: the workers write themselves, as they can
        log.warning("the SQLite writer could not start (%s); workers run their transactions themselves", exc)
        return None
    if proc.wait_ready():
        return proc
    log.warning("the SQLite writer did not start; workers run their transactions themselves")
    proc.stop()
    return None


if __name__ == "__main__":
    main()
