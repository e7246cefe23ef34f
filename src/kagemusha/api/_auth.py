"""Bearer-token authentication for the agent's API.

One token per cluster, read from ``cluster.api_token_file`` (mode 0600, checked
by the config loader and again here). The file is re-read when its mtime
changes, so a token can be rotated without restarting agents. A rejected
request is logged with the client address, the path and why, never with the
token it sent (``tests/api/test_auth.py::test_rejections_are_logged_without_the_token``).
"""

from __future__ import annotations

import hmac
import logging
import time
from pathlib import Path

from fastapi import HTTPException, Request

from kagemusha.config import Config

__all__ = ["TokenSource", "actor_of", "client_of", "resolve_path"]

log = logging.getLogger("kagemusha.api")

#: At most one "rejected" log line per client and reason in this many seconds (a scanner must not flood the log).
_LOG_EVERY = 10.0


def resolve_path(config: Config, value: str) -> Path:
    """A file named in ``cluster.toml``: relative paths resolve against the config file's directory."""
    p = Path(value)
    if p.is_absolute() or not config.source:
        return p
    return Path(config.source).resolve().parent / p


def client_of(request: Request) -> str:
    """The peer address of ``request`` (no proxy headers are trusted)."""
    return request.client.host if request.client else "unknown"


def actor_of(request: Request) -> str:
    """Who an action is audited as: ``api token@<client ip>``, plus what the client says it is.

    The CLI sends ``X-Kagemusha-Actor: cli <user>@<host>``; it is informative only (the token is what
    authenticates), so it is cut short and stripped of anything but printable ASCII.
    """
    who = f"api token@{client_of(request)}"
    claimed = request.headers.get("x-kagemusha-actor", "")
    claimed = "".join(ch for ch in claimed if 32 <= ord(ch) < 127)[:64].strip()
    return f"{who} ({claimed})" if claimed else who


class TokenSource:
    """The cluster's API token, re-read when the file changes.

    Args:
        path: the token file, or ``None`` when the cluster has no API token (every
            authenticated endpoint then answers 503: the API is disabled, not open).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._token: bytes | None = None
        self._stamp: tuple[int, int, int, int] | None = None
        self._problem = "" if path is not None else "the API is disabled: cluster.api_token_file is not set"
        self._logged: dict[tuple[str, str], float] = {}

    def _load(self) -> None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError as exc:
            self._token, self._stamp = None, None
            self._problem = f"the API is disabled: cannot read cluster.api_token_file: {exc.strerror}"
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_mode, st.st_ino)  # a chmod or a replaced file counts too
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if st.st_mode & 0o077:
            self._token = None
            self._problem = f"the API is disabled: cluster.api_token_file {self.path} is readable by group or others"
            return
        try:
            token = self.path.read_bytes().strip()
        except OSError as exc:
            self._token = None
            self._problem = f"the API is disabled: cannot read cluster.api_token_file: {exc.strerror}"
            return
        self._token = token or None
        self._problem = "" if token else "the API is disabled: cluster.api_token_file is empty"

    def current(self) -> bytes | None:
        """The token now in force, or ``None`` (see ``problem``)."""
        if self.path is not None:
            self._load()
        return self._token

    @property
    def problem(self) -> str:
        """Why there is no token (empty while there is one)."""
        return self._problem

    def check(self, request: Request) -> None:
        """Let ``request`` through or raise ``HTTPException`` 401 (bad/missing token) or 503 (no token configured).

        Raises:
            HTTPException: 401 with ``WWW-Authenticate: Bearer``, or 503.
        """
        token = self.current()
        if token is None:
            self._log_rejection(request, "api disabled")
            raise HTTPException(503, self.problem)
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            reason = "missing token"
        elif scheme.lower() != "bearer" or not given.strip():
            reason = "not a bearer token"
        elif not hmac.compare_digest(given.strip().encode("utf-8", "replace"), token):
            reason = "wrong token"
        else:
            return
        self._log_rejection(request, reason)
        raise HTTPException(401, f"unauthorized: {reason}", headers={"WWW-Authenticate": "Bearer"})

    def _log_rejection(self, request: Request, reason: str) -> None:
        key = (client_of(request), reason)
        now = time.monotonic()
        if now - self._logged.get(key, -_LOG_EVERY) < _LOG_EVERY:
            return
        if len(self._logged) > 1000:
            self._logged.clear()
        self._logged[key] = now
        log.warning(
            "api request rejected",
            extra={"kv": {"client": key[0], "method": request.method, "path": request.url.path, "reason": reason}},
        )
