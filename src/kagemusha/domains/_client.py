"""Client side of the naming service: resolve a name through the VIP, retrying across a failover."""

from __future__ import annotations

import time
from urllib.parse import quote

from kagemusha.errors import DomainError

__all__ = ["resolve_name"]


def resolve_name(
    host: str,
    port: int,
    name: str,
    *,
    attempts: int = 30,
    delay: float = 1.0,
    timeout: float = 2.0,
) -> str:
    """The URL bound to ``name`` in the naming service at ``host:port``.

    The client's ``corbaname://<VIP>:<NameServicePort>`` of the seed: ``host`` is the VIP, so
    while the group fails over the service is briefly unreachable; the lookup is retried
    ``attempts`` times, ``delay`` seconds apart. A name that is not bound is not retried.

    Raises:
        DomainError: the name is not bound, or the naming service did not answer in time.
    """
    import httpx

    url = f"http://{host}:{port}/names/{quote(name, safe='/')}"
    last = ""
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(delay)
        try:
            r = httpx.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            last = f"{exc.__class__.__name__}: {exc}"
            continue
        if r.status_code == 404:
            raise DomainError(f"name {name!r} is not bound in the naming service at {host}:{port}")
        if r.status_code == 200:
            return str(r.json()["url"])
        last = f"HTTP {r.status_code}"
    raise DomainError(f"naming service at {host}:{port} did not answer for {name!r} ({last})")
