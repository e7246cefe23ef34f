"""``http`` monitor: a URL answers with the expected status.

Usage in ``cluster.toml``::

    [[groups.monitors]]
    name = "appw1"
    type = "http"
    url = "http://198.18.0.100:8080/health"
    expected_status = 200       # default
    contains = "ok"             # optional: the body must contain this text

One request per check on a fresh connection (a kept-alive connection could
hide a server that no longer accepts new ones). Proxy variables from the
environment are ignored: a monitor asks the service, not a proxy. Redirects
are not followed; the caller's timeout bounds the request.
"""

from __future__ import annotations

import ssl
from typing import ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from kagemusha.monitors._base import CheckResult, Monitor
from kagemusha.resources._base import DriverParams

__all__ = ["HttpMonitor", "HttpMonitorParams"]


class HttpMonitorParams(DriverParams):
    url: str = Field(min_length=8)
    expected_status: int = Field(default=200, ge=100, le=599)
    method: Literal["GET", "HEAD"] = "GET"
    #: Text the response body must contain (GET only).
    contains: str | None = None
    #: Verify TLS certificates for https URLs.
    verify: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = httpx.URL(v)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v


class HttpMonitor(Monitor):
    type_name: ClassVar[str] = "http"
    Params = HttpMonitorParams
    params: HttpMonitorParams

    _ssl: ssl.SSLContext | None = None

    def _verify(self) -> ssl.SSLContext | bool:
        # Loading the CA bundle costs milliseconds of CPU: once per monitor, not per check.
        if not self.params.verify:
            return False
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def check(self) -> CheckResult:
        p = self.params
        try:
            verify = self._verify() if httpx.URL(p.url).scheme == "https" else False
            async with httpx.AsyncClient(
                trust_env=False, verify=verify, follow_redirects=False, timeout=None
            ) as client:
                resp = await client.request(p.method, p.url, headers={"Connection": "close"})
        except httpx.HTTPError as exc:
            return CheckResult(False, f"{p.method} {p.url}: {type(exc).__name__}: {exc}")
        except (OSError, ssl.SSLError) as exc:
            return CheckResult(False, f"{p.method} {p.url}: {exc}")
        if resp.status_code != p.expected_status:
            return CheckResult(False, f"{p.method} {p.url}: status {resp.status_code}, expected {p.expected_status}")
        if p.contains is not None and p.contains not in resp.text:
            return CheckResult(False, f"{p.method} {p.url}: body lacks {p.contains!r}")
        return CheckResult(True, f"{p.method} {p.url}: {resp.status_code}")
