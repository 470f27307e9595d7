"""Connection limits: no thread waits for a request head, slow heads are cut off, and a worker caps its connections.

gthread hands a connection to a pool thread as soon as one byte arrives, and the thread then blocks in the parser
until the whole head is there: ~520 connections that each sent one byte held all 2 x 256 threads forever (issue 19,
item 3). Here the worker's poller thread reads every request head itself, without blocking, and only a complete
request (head and a small body, as llhttp reads it) is handed to a thread. Each request must arrive whole within
GCL_HEAD_TIMEOUT_SECONDS of its first byte (of the accept, for a new connection): a partial one is answered 408 and
closed, an empty one closed. Kept-alive connections idle at most GCL_KEEPALIVE_SECONDS (gunicorn's keepalive).

A worker holds at most GCL_MAX_CONNECTIONS connections (gunicorn's worker_connections, lowered to what its raised
RLIMIT_NOFILE allows); beyond that it answers 503 with Retry-After and closes. Requests whose rest a thread still has
to read (a large or 100-continue body) read it with the same per-read bound (SO_RCVTIMEO), so no read can hold a
thread for longer; answers that a client leaves unread for twice that long end the connection (TCP_USER_TIMEOUT), so
no write can either.

TLS listeners (gunicorn's --certfile/--keyfile) are read the same way: the poller makes the TLS handshake too, without
blocking, and the bound counts from the accept, so a client that never finishes its handshake or its head holds no
thread and is closed in time (past the cap such a connection is closed: a plain-text 503 would be garbage to it).
Listeners that may speak HTTP/2 (h2 offered over TLS, or cleartext prior knowledge) keep gthread's own path, with the
connection cap only.
"""

import contextlib
import errno
import heapq
import json
import resource
import select
import selectors
import socket
import ssl
import struct
import threading
import time
import types
from functools import partial

import httptools
from gunicorn import http, util
from gunicorn import sock as gsock
from gunicorn.http2 import negotiation
from gunicorn.workers import base
from gunicorn.workers.gthread import TConn, ThreadWorker

from .. import settings
from . import h1, spread
from .worker import KeepAliveThreadWorker

BUFFERED_BYTES = 256 * 1024  # a request up to this size is read whole before a thread sees it
RECV_BYTES = 64 * 1024
REFUSED_LINGER_SECONDS = 1.0  # a refused connection stays open this long for its 503 to be read
PAUSE_SECONDS = 0.02  # a worker that steps back for a sibling (spread.py) accepts again after this
MAX_REFUSED = 256  # refused connections lingering at once (beyond: closed at once)
NEXT_GRACE_SECONDS = 0.02  # a kept-alive connection's thread waits this long for the rest of a request
PARKED = "parked"  # _handle_next's answer for a kept-alive connection whose next request is not whole yet


def _answer(code, reason, message, headers=""):
    body = json.dumps({"code": code, "status": reason, "message": message, "detail": message}).encode()
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{headers}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


BAD = "bad"  # ready(): the body's framing is broken
BUSY = _answer(503, "Service Unavailable", "Too many connections to this server; retry shortly.", "Retry-After: 1\r\n")
TOO_SLOW = _answer(408, "Request Timeout", "The request did not arrive in time.")
MALFORMED = _answer(400, "Bad Request", "Invalid request: the body's framing is malformed.")


class _Progress:
    """httptools callbacks: how far the request in the buffer has come."""

    __slots__ = ("head", "complete", "expect")

    def __init__(self):
        self.head = self.complete = self.expect = False

    def on_header(self, name, value):
        if name.lower() == b"expect":
            self.expect = True

    def on_headers_complete(self):
        self.head = True

    def on_message_complete(self):
        self.complete = True


class Arrival:
    """How far the request at the start of a connection's bytes has come, fed as they arrive (llhttp parses each byte
    once: a request trickled in one byte at a time costs no more to follow than one sent whole)."""

    __slots__ = ("progress", "parser", "size", "state", "upgrade")

    def __init__(self):
        self.progress = _Progress()
        self.parser = httptools.HttpRequestParser(self.progress)
        self.size = 0
        self.state = False
        self.upgrade = False  # an Upgrade request (the events websocket): its reads must not time out

    def feed(self, chunk):
        """True once a thread may take the request: it is whole (or its head is malformed, for gunicorn to refuse, or
        its body is one a thread must read: large or behind 100-continue); False while it is still arriving; BAD when
        its body's framing is broken (a bad chunk size, say), which would leave a thread waiting for bytes that never
        come."""
        if self.state is not False or not chunk:
            return self.state
        self.size += len(chunk)
        progress = self.progress
        try:
            self.parser.feed_data(chunk)
        except httptools.HttpParserUpgrade:
            self.state = self.upgrade = True
        except httptools.HttpParserError:
            # A malformed head: gunicorn answers it (400), and everything it needs to say so is here.
            self.state = BAD if progress.head else True
        else:
            done = progress.complete or (progress.head and progress.expect)
            self.state = bool(done or self.size >= BUFFERED_BYTES)
        return self.state


def ready(data):
    """Arrival.feed for bytes at hand."""
    return Arrival().feed(data)


class _Reading:
    """A connection whose next request the poller is reading."""

    __slots__ = ("conn", "data", "deadline", "arrival", "handshake")

    def __init__(self, conn, data, deadline, handshake=False):
        self.conn, self.data, self.deadline = conn, bytearray(data), deadline  # bytearray: appends in place
        self.arrival = Arrival()
        self.arrival.feed(data)
        self.handshake = handshake  # a new TLS connection whose handshake is not over


class GuardedWorker(KeepAliveThreadWorker):
    """KeepAliveThreadWorker whose threads only ever see requests that have arrived whole (see module doc)."""

    _paused_until = 0.0  # accepting is paused until then, for a less loaded sibling (spread.py)

    @property
    def worker_connections(self):
        """What gthread's loop compares its connections with to decide whether to accept: never a limit here (past
        the cap a connection is accepted to be refused clearly; gthread would leave it hanging in the backlog), but 0
        while paused."""
        return 0 if time.monotonic() < self._paused_until else 1 << 30

    @worker_connections.setter
    def worker_connections(self, value):
        pass  # gthread sets the configured number: that is max_connections here

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_timeout = settings.load()["HEAD_TIMEOUT_SECONDS"]
        self.max_connections = self.cfg.worker_connections
        self._guard = False
        self._tls = None  # the SSLContext of a TLS listener (init_process)
        self._reading = {}  # fileno -> _Reading
        self._deadlines = []  # heap of (deadline, fileno, _Reading)
        self._refused = []  # (close at, socket)

    def init_process(self):
        _json_error_pages()
        h2 = "h2" in (self.cfg.http_protocols or ()) if self.cfg.is_ssl else False
        self._guard = not h2 and not negotiation.prior_knowledge_allowed(self.cfg, ("127.0.0.1", 0))
        if self._guard and self.cfg.is_ssl:
            self._tls = gsock.ssl_context(self.cfg)  # once per worker (gthread loads the certificate per connection)
        # Refuse before the process runs out of file descriptors (a worker's connections are spread unevenly:
        # one may hold most of them, hence a cap well above an even share by default).
        spare = self.cfg.threads + 256
        self.max_connections = min(self.max_connections, _raise_open_files(self.max_connections + spare) - spare)
        spread.publish(self.age, 0)  # siblings count this worker from the start
        super().init_process()

    # -- accepting --------------------------------------------------------------------------------------------

    def accept(self, listener):
        if spread.should_step_back(self.age, self.nr_conns):
            self._pause_accepting()
            return None
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE):
                self.log.warning("Out of file descriptors: %s", error)
                return None
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return None
        if self.nr_conns >= self.max_connections:
            if self._guard and self._tls is None:
                self._refuse(sock)
            else:
                sock.close()  # TLS: a plain-text 503 would be garbage to the client
            return None
        self.nr_conns += 1
        spread.publish(self.age, self.nr_conns)
        self.enqueue_req(TConn(self.cfg, sock, client, listener.getsockname()))
        return None

    def _pause_accepting(self):
        """Let the listener go to a sibling for a moment: every worker polls it, so another one accepts."""
        self._paused_until = time.monotonic() + PAUSE_SECONDS
        self.set_accept_enabled(False)
        timer = threading.Timer(PAUSE_SECONDS, self.method_queue.defer, args=(_nothing,))
        timer.daemon = True
        timer.start()  # wakes the loop, which then accepts again (worker_connections)

    def _refuse(self, sock):
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.send(BUSY)
            sock.shutdown(socket.SHUT_WR)
        if len(self._refused) >= MAX_REFUSED:
            sock.close()
            return
        # Closing with the client's request unread would reset the connection and could drop the 503 on its way.
        self._refused.append((time.monotonic() + REFUSED_LINGER_SECONDS, sock))

    # -- reading heads on the poller ----------------------------------------------------------------------------

    def enqueue_req(self, conn):
        """Every way into a thread passes here: read the request on the poller first (module doc)."""
        if not self._guard:
            return super().enqueue_req(conn)
        data = b""
        if conn.parser is not None:
            data = conn.parser.unreader.buf.getvalue()  # read ahead already (pipelining)
            conn.parser.unreader.buf.seek(0)
            conn.parser.unreader.buf.truncate()
            if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():  # decrypted already: no poll will say so
                with contextlib.suppress(OSError):
                    data += conn.sock.recv(conn.sock.pending())
        elif self._tls is not None:
            return self._read_later(conn, data, handshake=True)
        arrival = Arrival()
        state = arrival.feed(data)
        if state is BAD:
            return self._close(conn, MALFORMED)
        if state:
            return self._dispatch(conn, data, arrival.upgrade)
        return self._read_later(conn, data)

    def _read_later(self, conn, data, handshake=False):
        """Read the rest of the request on the poller, within the head bound."""
        conn.sock.setblocking(False)
        if handshake:
            conn.sock = self._tls.wrap_socket(
                conn.sock,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
            )
        reading = _Reading(conn, data, time.monotonic() + self.head_timeout, handshake)
        fileno = conn.sock.fileno()
        self._reading[fileno] = reading
        heapq.heappush(self._deadlines, (reading.deadline, fileno, id(reading), reading))
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, reading))
        return None

    def _on_readable(self, reading, _sock):
        conn = reading.conn
        if reading.handshake:
            try:
                conn.sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return  # more to come (a handshake's answer fits the socket's buffer; the deadline bounds it anyway)
            except (OSError, ValueError):
                self._stop_reading(reading)
                self._close(conn)
                return
            reading.handshake = False
        state = False
        while state is False:
            try:
                chunk = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:
                chunk = b""
            if not chunk:  # the client closed (or reset) the connection
                self._stop_reading(reading)
                self._close(conn)
                return
            reading.data += chunk  # in place (bytearray)
            state = reading.arrival.feed(chunk)
            if not (isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending()):
                break  # else TLS holds decrypted bytes that no poll will announce: read them now
        if state:
            self._stop_reading(reading)
            if state is BAD:
                self._close(conn, MALFORMED)
            else:
                self._dispatch(conn, bytes(reading.data), reading.arrival.upgrade)

    def _stop_reading(self, reading):
        fileno = reading.conn.sock.fileno()
        if self._reading.get(fileno) is reading:
            del self._reading[fileno]
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(reading.conn.sock)

    def _dispatch(self, conn, data, upgrade=False):
        """Hand a connection whose request is here to a thread."""
        if isinstance(conn.sock, ssl.SSLSocket) and not conn.initialized:  # handshaken on the poller: no wrap again
            conn.initialized = True
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.init()  # plain HTTP/1: only makes the parser (h2c keeps gthread's path)
        conn.parser.unreader.unread(data)
        conn.data_ready = True
        conn.sock.setblocking(True)
        # An upgraded connection (the events websocket) idles by design: its own protocol bounds it.
        _set_read_timeout(conn.sock, 0 if upgrade else self.head_timeout)
        ThreadWorker.enqueue_req(self, conn)

    def _close(self, conn, answer=None):
        if answer:
            with contextlib.suppress(OSError, ValueError):
                conn.sock.send(answer)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        super().murder_pending()
        spread.publish(self.age, self.nr_conns)  # once per turn of gthread's loop
        if not self._guard:
            return
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, fileno, _, reading = heapq.heappop(self._deadlines)
            if self._reading.get(fileno) is not reading:
                continue  # dispatched or closed already
            self._stop_reading(reading)
            self._close(reading.conn, TOO_SLOW if reading.data.strip(b"\r\n") else None)
        while self._refused and (self._refused[0][0] <= now or not self.alive):
            _, sock = self._refused.pop(0)
            sock.close()

    # -- kept-alive connections served by their own thread (worker.py) -------------------------------------------

    def _handle_next(self, conn):
        """worker.py serves the next request on a kept-alive connection from its thread: only a whole one. Clients
        often send a head and its body in two writes, so the thread waits a moment (NEXT_GRACE_SECONDS) for the
        rest; a request still incomplete then goes back to the poller."""
        if not self._guard:
            return super()._handle_next(conn)
        unreader = conn.parser.unreader
        data = unreader.buf.getvalue()
        unreader.buf.seek(0)
        unreader.buf.truncate()
        if not data:
            try:
                data = _recv_nowait(conn.sock)  # worker.py saw it readable
            except OSError:
                return False
            if data == b"":
                return False  # the client closed the connection
            data = data or b""
        if data and self._lean_for(conn):
            # The common case: a plain request that arrived whole, which h1.py parses once and serves (whatever it
            # does not take, the arrival check below follows as it comes).
            request = h1.parse(data, self._limits)
            if request is not None:
                return self._serve_parsed(conn, data, request)
        arrival = Arrival()
        state = arrival.feed(data)
        deadline = None
        while not state:
            try:
                chunk = _recv_nowait(conn.sock)  # worker.py saw it readable, or read ahead
            except OSError:
                return False
            if chunk == b"":
                return False  # the client closed the connection
            if chunk:
                data += chunk
                state = arrival.feed(chunk)
                continue
            now = time.monotonic()
            deadline = deadline or now + NEXT_GRACE_SECONDS
            if now >= deadline or not _readable(conn.sock, deadline - now):
                # Not True: the thread stops lingering, and gthread's finish_request passes the connection (with its
                # bytes in the unreader) to enqueue_req, which reads the rest on the poller.
                unreader.unread(data)
                return PARKED
        unreader.unread(data)
        if arrival.upgrade:
            _set_read_timeout(conn.sock, 0)  # as in _dispatch
        if state is BAD:
            with contextlib.suppress(OSError):
                conn.sock.sendall(MALFORMED)
            return False
        return super()._handle_next(conn)


def _recv_nowait(sock):
    """What the socket has now (None: nothing yet). TLS sockets take no recv flags: non-blocking for the call."""
    if not isinstance(sock, ssl.SSLSocket):
        try:
            return sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
    sock.setblocking(False)
    try:
        return sock.recv(RECV_BYTES)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    finally:
        sock.setblocking(True)


def _readable(sock, timeout):
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # decrypted already
    poller = select.poll()  # not select.select: this worker's descriptors may pass 1023
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    except (OSError, ValueError):
        return False


def _nothing():
    pass


def _json_error_pages():
    """gunicorn answers the requests it cannot parse (400, 414, 431, 501) with an HTML page: answer them in the one
    JSON error envelope every other error uses. In the worker process only (base.Worker.handle_error's util)."""
    if getattr(base.util, "gcl_json_errors", False):
        return
    shim = types.SimpleNamespace(**vars(util))
    shim.gcl_json_errors = True

    def write_error(sock, status_int, reason, mesg):
        util.write_nonblock(sock, _answer(status_int, reason, mesg or reason))

    shim.write_error = write_error
    base.util = shim


def _set_read_timeout(sock, seconds):
    """Bound every blocking read a thread makes on this socket by `seconds` (a socket option: Python's own timeout
    would make the socket non-blocking for gunicorn), and the time its answers may wait unsent or unacknowledged by
    twice that (TCP_USER_TIMEOUT: a client that sends requests but never reads the answers fills the buffers, and a
    thread's sendall would wait forever; the kernel then ends the connection and the write fails). 0: no bound."""
    whole = int(seconds)
    with contextlib.suppress(OSError):
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
        )
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(2000 * seconds))


def _raise_open_files(wanted):
    """Let a worker hold its connection cap: raise the soft RLIMIT_NOFILE towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return wanted if soft == resource.RLIM_INFINITY else soft
