"""Clients of a clustered domain: look names up and call services through the VIP, across a failover.

The seed's chapter 3: a client sets ``java.naming.provider.url=corbaname://<VIP>:<NameServicePort>``
and keeps working while the failover group moves to the standby. Here::

    from kagemusha.client import call, lookup

    url = lookup("domain1", "http://192.168.1.111:2809")      # -> "http://192.168.1.111:80/"
    r = call("GET", url)                                       # an httpx.Response
    r = call("PUT", url + "kv/x", content=b"1", deadline=60)

While the group fails over the VIP does not answer for a while (the standby takes the address,
mounts the disk and starts the domain). Both functions retry until ``deadline`` seconds have
passed, with a growing back-off (50 ms doubling up to 1 s, with jitter), and each attempt is
bounded by ``timeout`` (never past the deadline). Then they raise one
:class:`~kagemusha.errors.ServiceUnavailable` that says what was tried, how often and the last
failure.

What is retried: a request whose connection could not be made (it never reached a server) is
retried for every method; an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) is
also retried after a broken or timed-out exchange and after 502/503/504 answers. A POST or PATCH
that may have reached the server is not repeated (``retry_unsafe=True`` says it is safe to).
Any other answer (including 4xx and 500) is returned as it is; ``lookup`` raises
:class:`~kagemusha.errors.DomainError` at once for a name that is not bound (404).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from kagemusha.errors import DomainError, ServiceUnavailable

__all__ = ["DEFAULT_DEADLINE", "IDEMPOTENT_METHODS", "RETRY_STATUSES", "call", "lookup"]

DEFAULT_DEADLINE = 30.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503, 504})
_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0


def _naming_base(url: str) -> str:
    """``http://host:port`` of a naming service given as ``http(s)://host:port[/names]`` or ``corbaname://host:port``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = parts.scheme.lower()
    if scheme in ("corbaname", "iiop", "corbaloc"):
        scheme = "http"
    if scheme not in ("http", "https") or not parts.netloc:
        raise DomainError(
            f"not a naming service URL: {url!r} (expected http://HOST:PORT or corbaname://HOST:PORT)"
        )
    path = parts.path.rstrip("/")
    path = path.removesuffix("/names")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def call(
    method: str,
    url: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
    timeout: float = 5.0,
    retry_unsafe: bool = False,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **kwargs: Any,
) -> httpx.Response:
    """Send one HTTP request, retrying it until ``deadline`` seconds have passed (see the module docstring).

    Args:
        method: the HTTP method.
        url: the service URL (through the VIP).
        deadline: seconds, from now, after which no new attempt is made.
        timeout: seconds for one attempt (connect, read, write and pool), cut to what is left of
            the deadline.
        retry_unsafe: repeat POST/PATCH after a broken exchange too (the caller says it is safe).
        client: an ``httpx.Client`` to send with (connection reuse); a new one per call otherwise.
        sleep, clock: injected for tests.
        **kwargs: passed to ``httpx.Client.request`` (``content``, ``json``, ``params``, ``headers``...).

    Returns:
        The response (any status except a retried 502/503/504 that lasted past the deadline,
        which is returned as the last answer).

    Raises:
        ServiceUnavailable: no attempt got an answer before the deadline.
    """
    method = method.upper()
    idempotent = method in IDEMPOTENT_METHODS or retry_unsafe
    start = clock()
    end = start + max(0.0, deadline)
    attempts = 0
    last = "no attempt made"
    delay = _FIRST_DELAY
    own = client is None
    http = client if client is not None else httpx.Client()
    try:
        while True:
            attempts += 1
            left = end - clock()
            per_try = max(0.05, min(timeout, left))
            try:
                response = http.request(method, url, timeout=per_try, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = _describe(exc)  # never reached a server: safe to repeat for every method
            except httpx.TransportError as exc:
                if not idempotent:
                    raise ServiceUnavailable(
                        f"{method} {url}: {_describe(exc)} (not repeated: {method} is not idempotent;"
                        " pass retry_unsafe=True if it is safe)"
                    ) from exc
                last = _describe(exc)
            else:
                if response.status_code not in RETRY_STATUSES or not idempotent:
                    return response
                last = f"HTTP {response.status_code}"
                if clock() + delay >= end:
                    return response
            now = clock()
            if now + delay >= end:
                waited = now - start
                raise ServiceUnavailable(
                    f"{method} {url}: no answer within the deadline of {deadline:g} s"
                    f" ({attempts} attempt{'s' if attempts != 1 else ''} in {waited:.1f} s; last: {last})"
                )
            sleep(delay * (0.5 + random.random() / 2))
            delay = min(_MAX_DELAY, delay * 2)
    finally:
        if own:
            http.close()


def lookup(
    name: str,
    url: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
    timeout: float = 2.0,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The URL bound to ``name`` in the naming service at ``url`` (the VIP and ``NameServicePort``).

    Args:
        name: the bound name (``domain1``, ``domain1/admin``, a name the app bound).
        url: the naming service: ``http://VIP:PORT`` or the seed's ``corbaname://VIP:PORT``.
        deadline: seconds to keep trying through a failover.
        timeout: seconds per attempt.
        client, sleep, clock: as for :func:`call`.

    Returns:
        The service URL, built by the domain from its advertised host (the VIP).

    Raises:
        DomainError: the name is not bound (answered at once, not retried).
        ServiceUnavailable: the naming service did not answer before the deadline.
    """
    base = _naming_base(url)
    target = f"{base}/names/{quote(name, safe='/')}"
    r = call("GET", target, deadline=deadline, timeout=timeout, client=client, sleep=sleep, clock=clock)
    if r.status_code == 404:
        raise DomainError(f"name {name!r} is not bound in the naming service at {base}")
    if r.status_code != 200:
        raise ServiceUnavailable(f"naming service at {base} answered HTTP {r.status_code} for {name!r}")
    try:
        return str(r.json()["url"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceUnavailable(
            f"naming service at {base} gave no URL for {name!r}: {r.text[:200]!r}"
        ) from exc
