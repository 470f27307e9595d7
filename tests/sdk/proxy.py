"""A loopback TCP proxy that can lose the answer to one acquisition after the server sent it (and so committed it)."""

import contextlib
import socket
import threading

UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Proxy:
    """Forwards every connection to ``upstream`` (host, port). ``lose_next_grant(mode)`` arms it: the answer to the
    next acquisition request is dropped with its connection (``"drop"``) or replaced by a 503 (``"503"``)."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = None
        self.lost = threading.Event()  # set once an answer was lost
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/api"

    def lose_next_grant(self, mode):
        with self.lock:
            self.armed = mode

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, upstream]
            tamper = {}
            threading.Thread(target=self._requests, args=(client, upstream, tamper), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, tamper), daemon=True).start()

    def _requests(self, src, dst, tamper):
        while data := _recv(src):
            if b"/increment" in data:
                with self.lock:
                    tamper["mode"], self.armed = self.armed, None
            try:
                dst.sendall(data)
            except OSError:
                break
        _close(dst)

    def _answers(self, src, dst, tamper):
        while data := _recv(src):
            mode = tamper.pop("mode", None)
            if mode is not None:  # this is the acquisition's answer: the server has committed what it says
                if mode == "503":
                    dst.sendall(UNAVAILABLE)
                self.lost.set()
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        _close(dst)
        _close(src)

    def close(self):
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                _close(sock)


def _recv(sock):
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock):
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
