"""The gunicorn worker GCL runs: gthread, except that a kept-alive connection stays with the thread that served it.

gthread passes every request on a kept-alive connection from its poller thread to a pool thread and back: an epoll
wake-up, a future, a pipe write to wake the poller and two epoll_ctl calls per request. Profiled under the GIL on a
2-core machine that was ~0.6 ms of CPU per request, more than the slot transaction itself, and two thread hand-overs
in every hand-off of a slot. Here the thread that answered a request waits on the connection for the next one, and
serves it directly. It gives the connection back to the poller (gthread's own path) when the connection idles
LINGER_SECONDS, when the worker is stopping, or at once when threads run short: parked waiters hold threads too, and
a release must always find one.

Requests after the first on such a connection are parsed and answered by serving/h1.py when they are plainly
simple (most of a fleet's traffic), and by gunicorn otherwise.
"""

import contextlib
import errno
import io
import os
import threading
import time

from gunicorn import glogging, util
from gunicorn.workers.gthread import ThreadWorker

from .. import settings
from ..fds import readable
from . import h1
from .logs import JsonLogger

LINGER_SECONDS = 5.0  # an idle connection goes back to the poller after this long
RECV_BYTES = 64 * 1024
SLICE_SECONDS = 1.0  # a lingering thread re-checks its state at least this often (a missed wake-up costs this)


class KeepAliveThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        threads = self.cfg.threads
        # Lingering threads leave when this many threads are busy, and may linger again below the low mark.
        self._high = max(1, threads - max(8, threads // 8))
        self._low = max(0, self._high - max(4, threads // 16))
        self._busy = 0
        self._lock = threading.Lock()
        self._pressure = self._stopping = None  # eventfds, made in the worker process (init_process)
        self._lean = False  # whether h1.py may serve plain requests (init_process)
        self._limits = h1.Limits(self.cfg)
        self._environs = {}  # listener address -> the fixed part of its environ

    def _lean_allowed(self):
        """h1.py skips gunicorn's per-request hooks, access log and TLS/proxy handling: only when none is on."""
        cfg, own = self.cfg, settings.load()
        defaults = all(
            cfg.settings[name].value is cfg.settings[name].default for name in ("pre_request", "post_request")
        )
        return (
            defaults
            and type(self.log) in (glogging.Logger, JsonLogger)  # JsonLogger only formats: same access log
            and not self.log.access_log_enabled
            and not cfg.is_ssl
            and cfg.proxy_protocol in (False, "off", None)
            and getattr(cfg, "protocol", "http") == "http"
            and not own["SCRIPT_NAME"]
            and own["LEAN_HTTP"]
        )

    def init_process(self):
        # Readable while threads run short: every lingering thread selects on it and leaves.
        self._pressure = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Readable once the worker stops: lingering threads give their connections back at once, so the worker
        # closes them and exits as promptly as gthread does (a client's next request then fails fast).
        self._stopping = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lean = self._lean_allowed()
        super().init_process()

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        os.eventfd_write(self._stopping, 1)

    def handle_quit(self, sig, frame):
        os.eventfd_write(self._stopping, 1)
        super().handle_quit(sig, frame)

    def _enter(self):
        with self._lock:
            self._busy += 1
            if self._busy == self._high:
                os.eventfd_write(self._pressure, 1)

    def _leave(self):
        with self._lock:
            self._busy -= 1
            if self._busy == self._low:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._pressure)

    def _short_of_threads(self):
        return self._busy >= self._high or bool(readable([self._pressure], 0))

    def handle(self, conn):
        self._enter()
        try:
            keepalive = super().handle(conn)
            deadline = time.monotonic() + min(LINGER_SECONDS, self.cfg.keepalive)
            while keepalive is True and self.alive and self._next_request_arrived(conn, deadline):
                keepalive = self._handle_next(conn)
                deadline = time.monotonic() + min(LINGER_SECONDS, self.cfg.keepalive)
            return keepalive
        finally:
            self._leave()

    def _lean_for(self, conn):
        """Whether h1.py may serve this connection's plain requests."""
        return self._lean and not getattr(conn, "is_http2", False) and isinstance(conn.server, tuple)

    def _handle_next(self, conn):
        """Serve the next request on a kept-alive connection; True to keep it open."""
        if not self._lean_for(conn):
            return super().handle(conn)
        unreader = conn.parser.unreader
        data = unreader.buf.getvalue()  # read ahead already (pipelining)
        unreader.buf = io.BytesIO()
        try:
            if not data:
                data = conn.sock.recv(RECV_BYTES)  # readable: _next_request_arrived saw it
                if not data:
                    return False  # the client closed the connection
        except OSError as error:
            return self._socket_error(error)
        request = h1.parse(data, self._limits)
        if request is None:
            unreader.unread(data)
            return super().handle(conn)
        return self._serve_parsed(conn, data, request)

    def _serve_parsed(self, conn, data, request):
        """Answer a request h1.parse read whole from the start of data (the rest is the next request's start)."""
        method, target, headers, body, length = request
        if length < len(data):
            conn.parser.unreader.unread(data[length:])  # pipelined: the next request's start
        try:
            return self._serve(
                conn, h1.environ(self._base(conn), method, target, headers, body, conn.sock, conn.client)
            )
        except OSError as error:
            return self._socket_error(error)

    def _socket_error(self, error):
        if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
            self.log.exception("Socket error processing request.")
        return False

    def _base(self, conn):
        base = self._environs.get(conn.server)
        if base is None:
            base = self._environs[conn.server] = h1.base_environ(self.cfg, conn.server)
        return base

    def _serve(self, conn, env):
        """What gthread's handle_request does for the request, with h1.respond writing the answer."""
        self.nr += 1
        close = False
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            close = True
        if not self.alive or not self.cfg.keepalive or len(self.keepalived_conns) >= self.max_keepalived:
            close = True
        try:
            data, close = h1.respond(self.wsgi, env, close)
        except Exception:
            self.log.exception("Error handling request")
            with contextlib.suppress(OSError):
                util.write_error(conn.sock, 500, "Internal Server Error", "")
            return False
        conn.sock.sendall(data)
        return not close

    def _next_request_arrived(self, conn, deadline):
        """True when the next request is there to read; False to give the connection back to the poller."""
        if conn.parser.unreader.buf.getvalue():  # read ahead already (pipelining)
            return True
        while self.alive and not self._short_of_threads():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                watched = [conn.sock, self._pressure, self._stopping]
                ready = readable(watched, min(left, SLICE_SECONDS))
            except (OSError, ValueError):  # closed under us: the poller's path reports it
                return False
            if conn.sock in ready and self.alive:
                return True
        return False
