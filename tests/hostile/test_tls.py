"""A TLS listener (gunicorn --certfile/--keyfile) bounds request heads as plain HTTP does: a client that never
finishes its handshake or its head (a slowloris over TLS) is closed within GCL_HEAD_TIMEOUT_SECONDS, and holds no
thread meanwhile, so others are served."""

import socket
import ssl
import time

import pytest
import trustme

from tests.conftest import Server
from tests.hostile.test_connections import _wait_closed

HEAD_TIMEOUT = 1.0
THREADS = 4
HEALTH = b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture
def tls_server(tmp_path):
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    env = {"GCL_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT), "GCL_THREADS": str(THREADS)}
    server = Server(tmp_path / "server", workers=1, env=env, tls_pem=pem).start()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    yield server, context
    server.stop()


def _tls(server, context, first=b""):
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=10), server_hostname="127.0.0.1"
    )
    if first:
        sock.sendall(first)
    return sock


def _health(server, context):
    """(status line, seconds) of GET /api/health over a new TLS connection."""
    start = time.monotonic()
    with _tls(server, context, HEALTH) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n", 1)[0], time.monotonic() - start


def test_a_slowloris_over_tls_is_cut_off_and_holds_no_thread(tls_server):
    server, context = tls_server
    # Twice as many slow heads as the worker has threads, and as many TCP connections that never start TLS.
    slow = [_tls(server, context, b"GET /api/health HTTP/1.1\r\nHost: x\r\n") for _ in range(2 * THREADS)]
    mute = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2 * THREADS)]
    status, seconds = _health(server, context)
    assert status == b"HTTP/1.1 200 OK" and seconds < HEAD_TIMEOUT / 2
    for sock in slow:
        waited, sent = _wait_closed(sock)
        sock.close()
        assert waited < HEAD_TIMEOUT + 2 and sent.startswith(b"HTTP/1.1 408"), sent
    for sock in mute:
        waited, sent = _wait_closed(sock)
        sock.close()
        assert waited < HEAD_TIMEOUT + 2 and sent == b""
    assert _health(server, context)[0] == b"HTTP/1.1 200 OK"


def test_a_head_trickled_within_the_bound_is_served(tls_server):
    server, context = tls_server
    sock = _tls(server, context)
    for byte in HEALTH:
        sock.sendall(bytes([byte]))
        time.sleep(HEAD_TIMEOUT / 4 / len(HEALTH))
    _, sent = _wait_closed(sock)
    sock.close()
    assert sent.startswith(b"HTTP/1.1 200 OK") and b'"ok"' in sent


def test_kept_alive_tls_connections_serve_pipelined_and_later_requests(tls_server):
    server, context = tls_server
    keep = HEALTH.replace(b"Connection: close\r\n", b"")
    sock = _tls(server, context, keep * 3)  # three requests in one TLS record: two wait decrypted in TLS' buffer
    sock.settimeout(10)
    data = b""
    while data.count(b"HTTP/1.1 200 OK") < 3 or not data.endswith(b"}\n"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    time.sleep(0.3)  # a later request, read by the thread that lingers on the connection
    sock.sendall(HEALTH)
    _, sent = _wait_closed(sock)
    sock.close()
    assert sent.startswith(b"HTTP/1.1 200 OK")
