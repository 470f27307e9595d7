"""Wake-ups for parked requests: a per-process registry of events and a datagram socket other processes reach.

A wake-up is only a hint: a woken request always re-reads its waiter row, and every parked request re-checks on
its own at least once a second, so a lost datagram costs latency, never correctness.
"""

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)


class Registry:
    """waiter id -> threading.Event, for the requests parked in this process."""

    def __init__(self):
        self._events = {}
        self._lock = threading.Lock()

    def register(self, waiter_id):
        event = threading.Event()
        with self._lock:
            self._events[waiter_id] = event
        return event

    def unregister(self, waiter_id):
        with self._lock:
            self._events.pop(waiter_id, None)

    def wake(self, waiter_id):
        with self._lock:
            event = self._events.get(waiter_id)
        if event is not None:
            event.set()
        return event is not None

    def __len__(self):
        return len(self._events)


class Notifier:
    """UDP datagrams on one address per process; the owner address is stored in each waiter row."""

    def __init__(self, host="127.0.0.1"):
        self.registry = Registry()
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
            for waiter_id in data.decode(errors="ignore").split(","):
                if waiter_id:
                    self.registry.wake(waiter_id)

    def send(self, owner, waiter_ids):
        if owner == self.address:
            for waiter_id in waiter_ids:
                self.registry.wake(waiter_id)
            return
        try:
            _, host, port = owner.split(":")
            self._out.sendto(",".join(waiter_ids).encode(), (host, int(port)))
        except (OSError, ValueError):
            log.debug("wake-up to %s not delivered; the waiter re-checks on its own", owner)


_notifier = None
_notifier_lock = threading.Lock()


def notifier():
    """This process's notifier (created after gunicorn forks, on first use)."""
    global _notifier
    with _notifier_lock:
        if _notifier is None or _notifier._pid != os.getpid():
            _notifier = Notifier(os.environ.get("GCL_NOTIFY_HOST", "127.0.0.1"))
        return _notifier


def wake_all(targets):
    """targets: {owner address: [waiter ids]}."""
    if not targets:
        return
    node = notifier()
    for owner, ids in targets.items():
        node.send(owner, ids)
