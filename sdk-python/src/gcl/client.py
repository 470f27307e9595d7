"""Synchronous transport (requests), flow driver and the CRUD ``Client``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import requests

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


class SyncTransport:
    """Sends ``Request`` objects with a ``requests.Session``; connection failures become GCLConnectionError."""

    def __init__(self, config: Config, session: requests.Session | None = None) -> None:
        self.config = config
        self._own = session is None
        self.session = session or session_for(config.api_url)
        self._headers = {"Accept": "application/json", **auth_headers(config)}

    def send(self, req: Request) -> Response:
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
        if self._own:
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
