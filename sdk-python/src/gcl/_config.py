"""Where the SDK sends and as whom: explicit arguments > ``GCL_API_URL``/``GCL_API_KEY`` > defaults."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_API_URL = "http://127.0.0.1:4280/api"
DEFAULT_HTTP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Config:
    api_url: str
    api_key: str | None


def resolve_config(
    api_url: str | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Explicit arguments win over ``GCL_API_URL``/``GCL_API_KEY``, which win over the default."""
    env = os.environ if env is None else env
    url = api_url or env.get("GCL_API_URL") or DEFAULT_API_URL
    key = api_key if api_key is not None else (env.get("GCL_API_KEY") or None)
    return Config(api_url=url.rstrip("/"), api_key=key)


def auth_headers(config: Config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


_holder: dict[str, str] = {}


def default_holder() -> dict[str, str]:
    """This process, named once per process: a forked child names itself anew (its pid differs)."""
    if not _holder:
        _holder.update(type="process", id=f"{socket.gethostname()}:{os.getpid()}")
    return dict(_holder)


os.register_at_fork(after_in_child=_holder.clear)


def normalize_names(names: str | Sequence[str]) -> list[str]:
    """Accept one name or a list; keep order, drop duplicates and empty names."""
    items = [names] if isinstance(names, str) else list(names)
    return list(dict.fromkeys(n for n in items if n))
