"""Wake-ups for parked requests: a per-process registry of events and a datagram socket other processes reach.

A wake-up is only a hint: a woken request always re-reads its waiter row, and every parked request re-checks on
its own at least once a second, so a lost datagram costs latency, never correctness.
"""

import contextlib
import logging
import os
import socket
import threading
import time

import psycopg2

from ..database import db, defer
from ..fds import readable as readable_within
from ..tx import after_commit

log = logging.getLogger(__name__)


class Waker:
    """One parked request's wake-up: an eventfd, so the request can select() on it and its client socket at once;
    with SQLite also a datagram socket of its own, whose address is stored with the waiter, so a wake-up from another
    process reaches the parked thread directly (no hop through the process's listener thread)."""

    def __init__(self, waiter_id, sock=None):
        self.waiter_id = waiter_id
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.sock = sock
        self.address = "udp:{}:{}".format(*sock.getsockname()) if sock is not None else None
        self.grant = None  # (lease id, token, expires, freed at) when the wake-up carries the committed grant

    def set(self, grant=None):
        if grant is not None:
            self.grant = grant
        os.eventfd_write(self.fd, 1)

    def wait(self, timeout, disconnected=None):
        """'woken', 'gone' (the client closed its connection) or 'timeout'.

        disconnected: the request's disconnect probe (Parking.disconnected), polled through its fileno()."""
        watched = [self.fd] if self.sock is None else [self.fd, self.sock]
        if disconnected is not None:
            watched.append(disconnected)
        try:
            readable = readable_within(watched, timeout)
        except (OSError, ValueError):  # the client socket is already closed
            return "gone"
        woken = self.sock in readable and self._receive()
        if self.fd in readable:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self.fd)
            woken = True
        if woken:
            return "woken"
        if disconnected is not None and disconnected in readable:
            return "gone" if disconnected() else "timeout"
        return "timeout"

    def _receive(self):
        """Read the datagrams that arrived: True when one names this waiter (a pooled socket may get stale ones)."""
        woken = False
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return woken
            for entry in data.decode(errors="ignore").split(","):
                waiter_id, grant = _decode(entry) if entry else (None, None)
                if waiter_id == self.waiter_id:
                    woken = True
                    if grant is not None:
                        self.grant = grant

    def close(self):
        os.close(self.fd)


class Registry:
    """waiter id -> Waker, for the requests parked in this process; and the parking places they take."""

    def __init__(self, datagram_host=None):
        self._wakers = {}
        self._lock = threading.Lock()
        self._reserved = 0
        self._host = datagram_host  # give each waker a datagram socket on this host (None: eventfd only)
        self._sockets = []  # idle datagram sockets, reused: a parked request costs no socket()/bind()

    def reserve(self, capacity):
        """Take one parking place if fewer than `capacity` are taken (atomic: no check-then-act race)."""
        with self._lock:
            if self._reserved >= capacity:
                return False
            self._reserved += 1
            return True

    def unreserve(self):
        with self._lock:
            self._reserved -= 1

    def register(self, waiter_id):
        sock = None
        if self._host is not None:
            with self._lock:
                sock = self._sockets.pop() if self._sockets else None
            if sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((self._host, 0))
                sock.setblocking(False)
        waker = Waker(waiter_id, sock)
        with self._lock:
            self._wakers[waiter_id] = waker
        return waker

    def unregister(self, waiter_id):
        with self._lock:
            waker = self._wakers.pop(waiter_id, None)
        if waker is None:
            return
        waker.close()
        if waker.sock is not None:
            waker.waiter_id = None
            waker._receive()  # drop what arrived for it
            with self._lock:
                if len(self._sockets) < 64:
                    self._sockets.append(waker.sock)
                    return
            waker.sock.close()

    def wake(self, waiter_id, grant=None):
        with self._lock:
            waker = self._wakers.get(waiter_id)
            if waker is not None:
                waker.set(grant)
        return waker is not None

    def __len__(self):
        return len(self._wakers)


class Notifier:
    """UDP datagrams on one address per process; the owner address is stored in each waiter row."""

    def __init__(self, host="127.0.0.1"):
        self.registry = Registry(datagram_host=host)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self.address = f"udp:{host}:{self._sock.getsockname()[1]}"
        self._pid = os.getpid()
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread = threading.Thread(target=self._listen, name="gcl-wakeups", daemon=True)
        self._thread.start()

    def _listen(self):
        while True:
            try:
                data = self._sock.recv(4096)
            except OSError:
                return
            for entry in data.decode(errors="ignore").split(","):
                if entry:
                    self.registry.wake(*_decode(entry))

    def send(self, owner, waiter_ids, grants=None):
        grants = grants or {}
        if owner == self.address:
            for waiter_id in waiter_ids:
                self.registry.wake(waiter_id, grants.get(waiter_id))
            return
        try:
            _, host, port = owner.split(":")
            self._out.sendto(",".join(_encode(i, grants.get(i)) for i in waiter_ids).encode(), (host, int(port)))
        except (OSError, ValueError):
            log.debug("wake-up to %s not delivered; the waiter re-checks on its own", owner)


class PostgresNotifier:
    """LISTEN/NOTIFY: a wake-up NOTIFY sent inside the granting transaction is delivered exactly at its commit,
    to every node; each node wakes the waiters it holds. One dedicated listening connection per process."""

    CHANNEL = "gcl_wake"

    def __init__(self, database):
        self.registry = Registry()
        self.address = f"pg:{socket.gethostname()}:{os.getpid()}"
        self._pid = os.getpid()
        self._params = dict(database=database.database, **getattr(database, "listen_params", database.connect_params))
        self._thread = threading.Thread(target=self._listen, name="gcl-wakeups", daemon=True)
        self._thread.start()

    def _listen(self):
        backoff = 0.1
        while True:
            try:
                conn = psycopg2.connect(**self._params)
                conn.autocommit = True
                conn.cursor().execute(f"LISTEN {self.CHANNEL}")
                backoff = 0.1
                while True:
                    if readable_within([conn], 5.0):
                        conn.poll()
                        while conn.notifies:
                            for entry in conn.notifies.pop(0).payload.split(","):
                                if entry:
                                    self.registry.wake(*_decode(entry))
            except Exception:  # the database went away: waiters fall back to their own re-checks meanwhile
                log.warning("wake-up listener lost its connection; reconnecting", exc_info=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def send_in_transaction(self, send, waiter_ids, grants=None):
        """NOTIFY the waiters (with the grants made to them) at this transaction's commit, to every node."""
        entries = [_encode(waiter_id, (grants or {}).get(waiter_id)) for waiter_id in waiter_ids]
        for start in range(0, len(entries), 40):  # NOTIFY payloads are limited to 8000 bytes (an entry < 160)
            send("SELECT pg_notify(?, ?)", (self.CHANNEL, ",".join(entries[start : start + 40])))

    def send(self, owner, waiter_ids, grants=None):
        grants = grants or {}
        for waiter_id in waiter_ids:
            self.registry.wake(waiter_id, grants.get(waiter_id))


def _encode(waiter_id, grant):
    """A datagram entry: the waiter id, and the grant it was made (so the request need not read it back)."""
    if grant is None:
        return waiter_id
    fields = (
        (value if isinstance(value, str) else repr(value)) if value is not None else "" for value in grant
    )  # lease id, fencing token, expires, freed at
    return "|".join((waiter_id, *fields))


def _decode(entry):
    waiter_id, _, rest = entry.partition("|")
    if not rest:
        return waiter_id, None
    try:
        lease_id, token, expires, freed_at = rest.split("|")
        return waiter_id, (
            lease_id or None,
            int(token) if token else None,
            float(expires) if expires else None,
            float(freed_at) if freed_at else None,
        )
    except ValueError:
        return waiter_id, None  # not ours to trust: the request reads its row instead


_notifier = None
_notifier_lock = threading.Lock()
_host = "127.0.0.1"


def configure(host):
    """Where this process receives wake-ups by datagram (settings NOTIFY_HOST); read when its notifier starts."""
    global _host
    _host = host


def notifier():
    """This process's notifier (created after gunicorn forks, on first use; a forked child makes its own)."""
    global _notifier
    found = _notifier
    if found is not None:
        return found
    with _notifier_lock:
        if _notifier is None:
            postgres = db.obj.dialect.name == "postgresql"
            _notifier = PostgresNotifier(db.obj) if postgres else Notifier(_host)
        return _notifier


def _forget_parents_notifier():
    """In a forked child: the parent's notifier (its socket, its listener thread) is not this process's."""
    global _notifier, _notifier_lock
    _notifier, _notifier_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_parents_notifier)


def wake_all(targets, grants=None):
    """targets: {owner address: [waiter ids]}; grants: {waiter id: (lease id, token, expires)} of those granted."""
    if not targets:
        return
    node = notifier()
    for owner, ids in targets.items():
        node.send(owner, ids, grants)


def on_commit(targets, grants=None):
    """Wake these waiters once the current transaction commits: local ones directly, others by datagram or NOTIFY.

    grants: what the transaction granted to whom, handed to the woken request."""
    node = notifier()
    remote = {owner: ids for owner, ids in targets.items() if owner != node.address}
    if remote and isinstance(node, PostgresNotifier):
        node.send_in_transaction(defer, [i for ids in remote.values() for i in ids], grants)
        targets = {owner: ids for owner, ids in targets.items() if owner == node.address}
    if targets:
        after_commit(lambda: wake_all(targets, grants))
