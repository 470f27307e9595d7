"""The SDK's only I/O: the sync (urllib3, or requests) and async (httpx) transports and the two flow drivers."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import metadata
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import httpx
import requests
import urllib3

from gcl._config import DEFAULT_HTTP_TIMEOUT, Config, auth_headers
from gcl._flows import Flow, Sleep, Steps
from gcl._wire import Request, Response, connection_reason, to_response
from gcl.errors import GCLConnectionError

T = TypeVar("T")
POOL_SIZE = 64  # blocks parked in the server's queue each hold a connection: keep more than requests' 10


def _user_agent() -> str:
    try:
        return f"gcl-python/{metadata.version('gcl')}"
    except metadata.PackageNotFoundError:
        return "gcl-python"


USER_AGENT = _user_agent()


def session_for(url: str) -> requests.Session:
    """A session for one server, with what requests would read from the environment on every request read once.

    requests looks up the proxy variables (scanning os.environ), the CA-bundle variables and ~/.netrc for each request:
    about 0.1 ms of CPU per call, on every acquire and every release. The SDK only calls one URL, so the answers are
    the same for all its requests; they are resolved here, when the client is made. ~/.netrc is left out: GCL
    authenticates with a bearer key, which a netrc login for the host would silently replace."""
    session = requests.Session()
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = settings["proxies"]
    session.verify = settings["verify"]
    session.trust_env = False
    return session


def pool_for(url: str, settings: requests.Session | None = None) -> urllib3.HTTPConnectionPool | None:
    """A urllib3 connection pool for a server reached directly (no proxy applies to it), with the CA bundle requests
    would use; None when a proxy applies: then requests, which knows every kind of proxy, sends (``session_for``).
    settings: that session, when the caller has made it already.

    urllib3 is the connection layer under requests; called directly, without requests' per-request work (preparing,
    hooks, cookies, adapters), an acquire+release through the SDK took 1.3 ms of client CPU instead of 2.2 ms on
    2 cores, and 2.2 ms instead of 3.3 ms end to end (p50)."""
    settings = settings or session_for(url)
    if requests.utils.select_proxy(url, settings.proxies):
        return None
    tls: dict[str, Any] = {}
    if url.startswith("https:"):
        # True (requests' own bundle) or the path the CA-bundle variables name; never False from the environment.
        bundle = certifi.where() if settings.verify is True else str(settings.verify)
        tls["cert_reqs"] = "CERT_REQUIRED"
        tls["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    return urllib3.connection_from_url(url, maxsize=POOL_SIZE, retries=False, **tls)


class _Transport:
    """What both transports send with every request, and how they report a server they cannot reach."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **auth_headers(config)}

    def _arguments(self, req: Request) -> dict[str, Any]:
        """``req`` as the arguments of ``requests.Session.request`` and ``httpx.AsyncClient.request`` alike."""
        return {
            "method": req.method,
            "url": self.config.api_url + req.path,
            "json": req.json,
            "headers": {**self._headers, **req.headers},
            "timeout": req.timeout or DEFAULT_HTTP_TIMEOUT,
        }

    def _unreachable(self, exc: Exception) -> GCLConnectionError:
        return GCLConnectionError(f"Cannot reach {self.config.api_url}: {connection_reason(exc)}")


class SyncTransport(_Transport):
    """Sends ``Request`` objects over urllib3 (``pool_for``), or the ``requests.Session`` given (or made for a proxy);
    connection failures become GCLConnectionError."""

    def __init__(self, config: Config, session: requests.Session | None = None) -> None:
        super().__init__(config)
        self._own = session is None
        self._pool = None
        if session is None:  # the environment read once: a direct pool, or this session when a proxy applies
            session = session_for(config.api_url)
            self._pool = pool_for(config.api_url, session)
        self._prefix = urlsplit(config.api_url).path  # the pool knows the host: requests name only the path
        self.session = session

    def send(self, req: Request) -> Response:
        if self._pool is None:
            return self._send_requests(req)
        headers = {**self._headers, **req.headers}
        body = None
        if req.json is not None:
            body = json.dumps(req.json, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        timeout = req.timeout or DEFAULT_HTTP_TIMEOUT
        try:
            raw = self._pool.urlopen(
                req.method,
                self._prefix + req.path,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                redirect=False,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from exc
        content = raw.data
        return to_response(raw.status, raw.headers, content, lambda: content.decode("utf-8", "replace"))

    def _send_requests(self, req: Request) -> Response:
        try:
            raw = self.session.request(**self._arguments(req))
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._unreachable(exc) from exc
        # lower_items(): the stored keys, without a case-insensitive look-up per header
        return to_response(raw.status_code, dict(raw.headers.lower_items()), raw.content, lambda: raw.text)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        elif self._own:
            self.session.close()


@cache
def _ssl_context() -> ssl.SSLContext:
    # Building a verifying context costs milliseconds; clients share one.
    return httpx.create_ssl_context()


class AsyncTransport(_Transport):
    """Sends ``Request`` objects with an ``httpx.AsyncClient``; connection failures become GCLConnectionError."""

    def __init__(self, config: Config, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config)
        self._own = client is None
        self.client = client or httpx.AsyncClient(
            verify=_ssl_context(), limits=httpx.Limits(max_connections=None, max_keepalive_connections=POOL_SIZE)
        )

    async def send(self, req: Request) -> Response:
        try:
            raw = await self.client.request(**self._arguments(req))
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise self._unreachable(exc) from exc
        return to_response(raw.status_code, raw.headers, raw.content, lambda: raw.text)

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()


def run_sync(flow: Flow[T], send: Callable[[Request], Response], sleep: Callable[[float], None] = time.sleep) -> T:
    """Drive a sans-I/O flow: perform each Call/Sleep step and feed the result back."""
    steps = Steps(flow)
    for step in steps:
        if isinstance(step, Sleep):
            sleep(step.seconds)
        else:
            with steps.answering():
                steps.answer = send(step.request)
    return steps.result


async def run_async(
    flow: Flow[T],
    send: Callable[[Request], Awaitable[Response]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Drive a sans-I/O flow on the event loop (twin of ``run_sync``)."""
    steps = Steps(flow)
    for step in steps:
        if isinstance(step, Sleep):
            await sleep(step.seconds)
        else:
            with steps.answering():
                steps.answer = await send(step.request)
    return steps.result
