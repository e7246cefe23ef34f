"""Pick a store backend from its URL (``local:/path.db`` or ``etcd://h1:2379,h2:2379``)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from kagemusha.errors import ConfigError
from kagemusha.store._base import Store

# Backends by URL scheme, imported lazily so the etcd client is only loaded when used.
BACKENDS: dict[str, str] = {
    "local": "kagemusha.store.local:LocalStore",
    "etcd": "kagemusha.store.etcd:EtcdStore",
}


@dataclass(frozen=True)
class StoreURL:
    scheme: str
    path: str = ""
    endpoints: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def parse_store_url(url: str) -> StoreURL:
    """Parse a store URL.

    Raises:
        ConfigError: the URL has no known scheme or no path/endpoints.
    """
    if url.startswith("local:"):
        path = url[len("local:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError('expected "local:/path/to/store.db", got no path')
        return StoreURL("local", path=path)
    if url.startswith("etcd://"):
        rest = url[len("etcd://"):].rstrip("/")
        eps = tuple(e.strip() for e in rest.split(",") if e.strip())
        if not eps:
            raise ConfigError('expected "etcd://host:port[,host:port...]", got no endpoints')
        for ep in eps:
            host, sep, port = ep.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f'etcd endpoint "{ep}" must be host:port with a port 1-65535')
        return StoreURL("etcd", endpoints=eps)
    raise ConfigError(f'unknown store "{url}": expected "local:/path/to/store.db" or "etcd://h1:2379,h2:2379"')


def open_store(url: str, *, timeout: float = 1.0, **options: Any) -> Store:
    """Open the store named by ``url``; ``timeout`` bounds each request.

    Raises:
        ConfigError: bad URL.
    """
    parsed = parse_store_url(url)
    module, _, cls = BACKENDS[parsed.scheme].partition(":")
    backend = getattr(importlib.import_module(module), cls)
    store: Store = backend.from_url(parsed, timeout=timeout, **options)
    return store
