"""Connection limits (issue 19, item 3): slow and half-open connections cannot take the server's threads.

Each test runs with the lean HTTP path on and off (GCL_LEAN_HTTP=1 / 0): the kept-alive connections a thread keeps
serving (serving/worker.py) must be as safe as gthread's own path.
"""

import re
import socket
import ssl
import statistics
import time

import pytest
import requests

HEALTH = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
LEAN = pytest.mark.parametrize("lean", ["1", "0"], ids=["lean", "gunicorn"])


def _read_response(sock):
    """One whole response from a kept-alive connection: (status, headers text)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), head.decode("latin-1")


def _open(port, first=b""):
    sock = socket.create_connection(("127.0.0.1", port))
    if first:
        sock.sendall(first)
    return sock


def _is_open(sock):
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _wait_closed(sock, timeout=10):
    """(seconds until the server closed it, the bytes it sent first); plain or TLS sockets."""
    start = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - start, data


def _p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


@LEAN
def test_a_thousand_half_open_connections_leave_the_server_serving(server_factory, figures, lean):
    head = 8.0
    server = server_factory(env={"GCL_LEAN_HTTP": lean, "GCL_HEAD_TIMEOUT_SECONDS": str(head)})
    requests.post(f"{server.limits_url}/", json={"name": "hostile", "limit": 100}, timeout=10).raise_for_status()

    # 300 kept-alive connections that answered a request and then sent one byte of the next (the lean path's
    # threads linger on those), 350 fresh ones that sent one byte, 350 that sent nothing.
    held = []
    for _ in range(300):
        sock = _open(server.port, HEALTH)
        assert _read_response(sock)[0] == 200
        sock.sendall(b"G")
        held.append((time.monotonic(), sock, True))
    for index in range(700):
        held.append((time.monotonic(), _open(server.port, b"G" if index % 2 else b""), index % 2 == 1))

    assert all(_is_open(sock) for _, sock, _ in held), "all 1,000 are held when the measurement starts"
    health, acquire = [], []
    session = requests.Session()
    for _ in range(100):
        start = time.monotonic()
        answer = requests.get(f"{server.url}/health", timeout=10)  # a new connection each time
        health.append(time.monotonic() - start)
        assert answer.status_code == 200
        start = time.monotonic()
        grant = session.post(
            f"{server.limits_url}/increment-with-lease",
            json={"names": ["hostile"], "slots": 1, "lease_duration": 60},
            timeout=10,
        )
        assert grant.status_code == 200, grant.text
        released = session.post(
            f"{server.limits_url}/decrement-with-lease", json={"lease_id": grant.json()["lease_id"]}, timeout=10
        )
        acquire.append(time.monotonic() - start)
        assert released.status_code == 204
    still_open = sum(_is_open(sock) for _, sock, _ in held)
    due = time.monotonic() - head + 0.5  # a connection opened before this may be closed already (a loaded machine)
    assert all(_is_open(sock) for opened, sock, _ in held if opened > due), "held until their bound, not before"

    # Every slow connection is closed within the bound: 408 when it had begun a request, silently otherwise.
    late = []
    for opened, sock, begun in held:
        _, data = _wait_closed(sock, max(0.1, opened + head + 5 - time.monotonic()))
        late.append(time.monotonic() - opened)  # at most a little late: earlier sockets were waited for first
        assert data.startswith(b"HTTP/1.1 408 ") if begun else data == b"", data[:80]
        sock.close()
    assert max(late) < head + 3.0, f"a slow connection stayed open {max(late):.1f} s (bound {head} s)"
    assert min(late) > head - 1.0, "slow connections are given the whole bound"
    figures.append(
        f"GCL_LEAN_HTTP={lean}: {len(held)} half-open connections held ({still_open} still open after the "
        f"measurement); health p50 {statistics.median(health) * 1e3:.1f} ms p99 {_p(health, 0.99) * 1e3:.1f} ms; "
        f"acquire+release p50 {statistics.median(acquire) * 1e3:.1f} ms p99 {_p(acquire, 0.99) * 1e3:.1f} ms; "
        f"closed {min(late):.1f}-{max(late):.1f} s after their last byte (GCL_HEAD_TIMEOUT_SECONDS={head:g})"
    )
    # Generous (the target is 100 ms; the exact figures are in the summary): a starved server never answers at all.
    assert _p(health, 0.99) < 2.0 and _p(acquire, 0.99) < 2.0


@LEAN
def test_idle_connections_are_closed(server_factory, lean):
    server = server_factory(env={"GCL_LEAN_HTTP": lean, "GCL_KEEPALIVE_SECONDS": "2", "GCL_HEAD_TIMEOUT_SECONDS": "2"})
    kept = _open(server.port, HEALTH)
    assert _read_response(kept)[0] == 200
    opened = time.monotonic()
    silent = _open(server.port)
    for sock in (kept, silent):
        _, data = _wait_closed(sock, 10)
        closed = time.monotonic() - opened
        assert data == b"" and 1.0 < closed < 4.5, (closed, data)
        sock.close()


@LEAN
def test_a_request_trickling_in_is_cut_off_at_the_bound(server_factory, lean):
    """One byte a second never completes a head: the server answers 408 and closes after the bound, however
    regularly bytes come (a per-read timeout would wait forever)."""
    server = server_factory(env={"GCL_LEAN_HTTP": lean, "GCL_HEAD_TIMEOUT_SECONDS": "2"})
    sock = _open(server.port, HEALTH)
    assert _read_response(sock)[0] == 200  # kept alive: the lean path's lingering thread gets the next bytes
    start = time.monotonic()
    sock.settimeout(0.5)
    answer = b""
    for byte in b"GET /api/health HTTP/1.1\r\nHost: x\r\n":
        try:
            sock.send(bytes([byte]))
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if answer or time.monotonic() - start > 10:
            break
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - start < 4.5


@LEAN
def test_connections_beyond_the_cap_are_refused_clearly(server_factory, lean):
    server = server_factory(workers=1, env={"GCL_LEAN_HTTP": lean, "GCL_MAX_CONNECTIONS": "20"})
    idle = [_open(server.port) for _ in range(20)]
    extra = _open(server.port)
    waited, data = _wait_closed(extra, 5)
    head = data.decode("latin-1")
    assert head.startswith("HTTP/1.1 503 ") and "\r\nRetry-After: 1\r\n" in head, head
    assert '"code": 503' in head
    for sock in idle + [extra]:
        sock.close()
    deadline = time.monotonic() + 5
    while True:  # the worker notices the closed connections on its next poll
        answer = requests.get(f"{server.url}/health", timeout=5)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answer.status_code == 200


@LEAN
def test_a_client_that_never_reads_its_answers_is_cut_off(server_factory, lean):
    """Pipelined requests whose large answers are never read fill the socket's buffers; the connection ends after
    twice the head bound without progress (TCP_USER_TIMEOUT), instead of holding the thread that writes forever."""
    server = server_factory(workers=1, env={"GCL_LEAN_HTTP": lean, "GCL_HEAD_TIMEOUT_SECONDS": "1"})
    with requests.Session() as session:
        for index in range(200):  # answers of ~100 KB each
            body = {"name": f"{index:03d}-" + "n" * 200, "limit": 1}
            session.post(f"{server.limits_url}/", json=body, timeout=10).raise_for_status()
    request = (
        b"POST /api/v2/concurrency_limits/filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(request * 200)  # ~20 MB of answers: far more than the socket buffers hold
    time.sleep(6.0)  # long past the bound (2 s) once the buffers filled
    sock.settimeout(5.0)
    received, closed = 0, False
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
        closed = True
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass  # the server kept writing once we read: it had been waiting on us all along
    sock.close()
    assert closed and received < 100 * 100_000, f"closed={closed} after {received} bytes of answers"
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200


def test_an_upgraded_connection_is_not_held_to_the_head_bound(server_factory):
    """The events websocket idles by design (its own protocol waits 10 s for a message): the read bound that guards
    request heads must not end it."""
    server = server_factory(workers=1, env={"GCL_HEAD_TIMEOUT_SECONDS": "1"})
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    upgrade = (
        "GET /api/events/in HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    with _open(server.port, upgrade) as sock:
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 101 "), "upgraded"
        sock.settimeout(None)  # _is_open peeks without waiting
        time.sleep(3.0)  # three head bounds without a byte
        assert _is_open(sock), "the socket is still open, waiting for Prefect's handshake message"


def _refused(sock):
    try:
        return sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT).startswith(b"HTTP/1.1 503 ")
    except BlockingIOError:
        return False


@LEAN
def test_workers_share_a_burst_of_connections(server_factory, lean):
    """Two workers with a cap of 600 each take a burst of 1,000 connections without refusing one: the worker that
    holds more leaves new connections to its sibling (serving/spread.py); without that, the first to call accept() took
    nearly all of them and refused past its cap while the other sat idle."""
    server = server_factory(workers=2, env={"GCL_LEAN_HTTP": lean, "GCL_MAX_CONNECTIONS": "600"})
    held = [_open(server.port, b"G") for _ in range(1000)]
    try:
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200  # all accepted by now
        refused = sum(_refused(sock) for sock in held)
        assert refused == 0, f"{refused} of 1,000 refused with room left in the other worker"
    finally:
        for sock in held:
            sock.close()
