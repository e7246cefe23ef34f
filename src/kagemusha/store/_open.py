"""Pick a store backend from its URL (``local:/path.db`` or ``etcd://h1:2379,h2:2379``)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from kagemusha.errors import ConfigError
from kagemusha.store._base import Store

__all__ = ["BACKENDS", "StoreURL", "open_cluster_store", "open_store", "parse_store_url"]

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
        path = path.removeprefix("//")
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


def open_cluster_store(cluster: Any, *, base_dir: str | None = None, timeout: float | None = None) -> Store:
    """Open the store named by a config's ``[cluster]`` section, with its TLS/auth options.

    ``cluster`` is a ``ClusterSection``; relative file paths resolve against ``base_dir``.
    The password is read from ``store_password_file`` here and never logged.

    Raises:
        ConfigError: a store option cannot work (unreadable file, ...), naming the key.
    """
    import os

    def path(v: str | None) -> str | None:
        if v is None:
            return None
        return v if os.path.isabs(v) or base_dir is None else os.path.join(base_dir, v)

    options: dict[str, Any] = {}
    if parse_store_url(cluster.store).scheme == "etcd":
        for key in ("ca_file", "cert_file", "key_file"):
            val = path(getattr(cluster, f"store_{key}"))
            if val is not None:
                options[key] = val
        if cluster.store_user is not None:
            options["user"] = cluster.store_user
        pw_file = path(cluster.store_password_file)
        if pw_file is not None:
            try:
                with open(pw_file, encoding="utf-8") as f:
                    options["password"] = f.read().strip()
            except OSError as exc:
                raise ConfigError([("cluster.store_password_file", f"cannot read {pw_file}: {exc.strerror}")]) from None
    return open_store(cluster.store, timeout=cluster.store_timeout if timeout is None else timeout, **options)
