"""Synchronous transport (urllib3, requests for proxies or a session given), flow driver and the CRUD ``Client``."""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, Self
from urllib.parse import urlsplit

import requests
import urllib3

from gcl import _crud
from gcl._base import (
    DEFAULT_HTTP_TIMEOUT,
    Call,
    Config,
    Flow,
    Request,
    Response,
    auth_headers,
    connection_reason,
    resolve_config,
    to_response,
)
from gcl._crud import Lease, Limit
from gcl.errors import GCLConnectionError


def session_for(url: str) -> requests.Session:
    """A session for one server, with what requests would read from the environment on every request read once.

    requests looks up the proxy variables (scanning os.environ), the CA-bundle variables and ~/.netrc for each request:
    about 0.1 ms of CPU per call, on every acquire and every release. The SDK only calls one URL, so the answers are
    the same for all its requests; they are resolved here, when the client is made. ~/.netrc is left out: GCL
    authenticates with a bearer key, which a netrc login for the host would silently replace."""
    session = requests.Session()
    proxies: dict[str, str] = {}
    settings = session.merge_environment_settings(url, proxies, None, None, None)
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
        bundle = requests.certs.where() if settings.verify is True else settings.verify
        tls["cert_reqs"] = "CERT_REQUIRED"
        tls["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    # Blocks parked in the server's queue each hold a connection: keep more than requests' 10 for re-use.
    return urllib3.connection_from_url(url, maxsize=POOL_SIZE, retries=False, **tls)


POOL_SIZE = 64


def _user_agent() -> str:
    try:
        return f"gcl-python/{metadata.version('gcl')}"
    except metadata.PackageNotFoundError:
        return "gcl-python"


USER_AGENT = _user_agent()


class SyncTransport:
    """Sends ``Request`` objects over urllib3 (``pool_for``), or the ``requests.Session`` given (or made for a proxy);
    connection failures become GCLConnectionError."""

    def __init__(self, config: Config, session: requests.Session | None = None) -> None:
        self.config = config
        self._own = session is None
        self._pool = None
        if session is None:  # the environment read once: a direct pool, or this session when a proxy applies
            session = session_for(config.api_url)
            self._pool = pool_for(config.api_url, session)
        self._prefix = urlsplit(config.api_url).path  # the pool knows the host: requests name only the path
        self.session = session
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **auth_headers(config)}

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
            raise GCLConnectionError(f"Cannot reach {self.config.api_url}: {connection_reason(exc)}") from exc
        content = raw.data
        return to_response(raw.status, raw.headers, content, lambda: content.decode("utf-8", "replace"))

    def _send_requests(self, req: Request) -> Response:
        try:
            raw = self.session.request(
                req.method,
                self.config.api_url + req.path,
                json=req.json,
                headers={**self._headers, **req.headers},
                timeout=req.timeout or DEFAULT_HTTP_TIMEOUT,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise GCLConnectionError(f"Cannot reach {self.config.api_url}: {connection_reason(exc)}") from exc
        # lower_items(): the stored keys, without a case-insensitive look-up per header
        return to_response(raw.status_code, dict(raw.headers.lower_items()), raw.content, lambda: raw.text)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        elif self._own:
            self.session.close()


def run_sync(
    flow: Flow,
    send: Callable[[Request], Response],
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Drive a sans-I/O flow: perform each Call/Sleep step and feed the result back."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value = error = None
        if isinstance(step, Call):
            try:
                value = send(step.request)
            except GCLConnectionError as exc:
                error = exc
        else:
            sleep(step.seconds)


class Client:
    """CRUD client for limits and leases. Config: explicit > ``GCL_API_URL``/``GCL_API_KEY`` > default."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.config = resolve_config(api_url, api_key)
        self.transport = SyncTransport(self.config, session)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def _run(self, flow: Flow) -> Any:
        return run_sync(flow, self.transport.send)

    def create(self, name: str, limit: int, *, active: bool = True, slot_decay_per_second: float = 0.0) -> Limit:
        return self._run(_crud.create_flow(name, limit, active, slot_decay_per_second))

    def read(self, id_or_name: str) -> Limit:
        return self._run(_crud.read_flow(id_or_name))

    def list(
        self,
        *,
        names: Sequence[str] | None = None,
        name_prefix: str | None = None,
        active: bool | None = None,
        page_size: int = _crud.MAX_PAGE_SIZE,
    ) -> builtins.list[Limit]:
        return self._run(_crud.list_flow(names, name_prefix, active, page_size))

    def update(
        self,
        id_or_name: str,
        *,
        name: str | None = None,
        limit: int | None = None,
        active: bool | None = None,
        slot_decay_per_second: float | None = None,
        if_match: str | None = None,
    ) -> None:
        changes = {"name": name, "limit": limit, "active": active, "slot_decay_per_second": slot_decay_per_second}
        self._run(_crud.update_flow(id_or_name, changes, if_match))

    def upsert(
        self,
        name: str,
        limit: int,
        *,
        active: bool = True,
        slot_decay_per_second: float = 0.0,
        if_match: str | None = None,
    ) -> Limit:
        return self._run(_crud.upsert_flow(name, limit, active, slot_decay_per_second, if_match))

    def delete(self, id_or_name: str, *, if_match: str | None = None) -> None:
        self._run(_crud.delete_flow(id_or_name, if_match))

    def reset(self, id_or_name: str) -> Limit:
        return self._run(_crud.reset_flow(id_or_name))

    def leases(self, id_or_name: str) -> builtins.list[Lease]:
        return self._run(_crud.leases_flow(id_or_name))

    def revoke(self, lease_id: str) -> None:
        self._run(_crud.revoke_flow(lease_id))

    def enable(self, id_or_name: str) -> None:
        self.update(id_or_name, active=True)

    def disable(self, id_or_name: str) -> None:
        self.update(id_or_name, active=False)
