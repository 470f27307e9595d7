"""A round-robin TCP load balancer on loopback for the fault tests: each new connection goes to the next node that
accepts it (a dead node is skipped), bytes are copied both ways, and a node's death closes its clients' connections,
as nginx or HAProxy would (no retry of a request that was sent: the client sees the connection drop)."""

import contextlib
import itertools
import socket
import threading


class Balancer:
    def __init__(self, ports):
        self.ports = list(ports)
        self._next = itertools.count()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="balancer", daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/api"

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client):
        start = next(self._next)
        for attempt in range(len(self.ports)):
            port = self.ports[(start + attempt) % len(self.ports)]
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            self._pump(client, upstream)
            return
        client.close()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):  # either side gone: both go, as a proxy closes its half-dead pair
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
                with self._lock:
                    self._sockets.discard(sock)

    def close(self):
        self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
