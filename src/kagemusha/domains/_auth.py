"""Admin credentials: argon2 hashes only; the plain password is never written or logged.

A check of the admin password costs an argon2 verification (64 MiB and tens of milliseconds
by design), so an admin API that anyone can reach could be made to exhaust the node's memory
and CPU with bad logins. :class:`Authenticator` bounds that cost:

- at most ``concurrent`` verifications run at once (a semaphore); a request that cannot get a
  slot within ``busy_wait`` seconds is answered 503 without verifying anything;
- a client (remote address) with ``max_failures`` failed logins within ``window`` seconds is
  answered 429 with ``Retry-After`` until the oldest failure leaves the window, again without
  verifying;
- a password that verified once is recognised again by an HMAC under a key that lives only in
  this process, without argon2: the cluster's monitor, which asks every few seconds with the
  right password, costs nothing and is never locked out by someone else's failures.

Tested by ``tests/domains/test_domain_security.py`` (200 concurrent bad logins against a real
domain: its RSS stays bounded).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "AuthOutcome",
    "AuthResult",
    "Authenticator",
    "basic_auth_dependency",
    "hash_password",
    "verify_password",
]


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    """A salted argon2id hash of ``password``."""
    return str(_hasher().hash(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (False for a missing or malformed hash)."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    if not password_hash:
        return False
    try:
        return bool(_hasher().verify(password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class AuthOutcome(StrEnum):
    """What a credentials check found."""

    OK = "ok"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate limited"
    BUSY = "busy"


@dataclass(frozen=True)
class AuthResult:
    """The outcome, the HTTP status that goes with it and, when limited, seconds to wait."""

    outcome: AuthOutcome
    retry_after: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK

    @property
    def status(self) -> int:
        return {
            AuthOutcome.OK: 200,
            AuthOutcome.UNAUTHORIZED: 401,
            AuthOutcome.RATE_LIMITED: 429,
            AuthOutcome.BUSY: 503,
        }[self.outcome]

    def headers(self) -> dict[str, str]:
        """Response headers for a refusal (``WWW-Authenticate``, ``Retry-After``)."""
        if self.outcome is AuthOutcome.UNAUTHORIZED:
            return {"WWW-Authenticate": 'Basic realm="kagemusha domain"'}
        if self.outcome in (AuthOutcome.RATE_LIMITED, AuthOutcome.BUSY):
            return {"Retry-After": str(max(1, round(self.retry_after)))}
        return {}


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic ...`` header value, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Authenticator:
    """HTTP basic credentials against ``user`` and an argon2 hash, with the cost of failures bounded.

    Thread-safe: :meth:`check` blocks (argon2) and is meant to run in a worker thread.
    """

    def __init__(
        self,
        user: Callable[[], str] | str,
        get_hash: Callable[[], str | None],
        *,
        concurrent: int = 2,
        busy_wait: float = 5.0,
        max_failures: int = 5,
        window: float = 60.0,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        fixed = user if isinstance(user, str) else ""
        self._user: Callable[[], str] = user if callable(user) else (lambda: fixed)
        self._get_hash = get_hash
        self._slots = threading.BoundedSemaphore(concurrent)
        self._busy_wait = busy_wait
        self._max_failures = max_failures
        self._window = window
        self._max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._key = secrets.token_bytes(32)
        self._known: OrderedDict[bytes, None] = OrderedDict()
        self.verifications = 0  # argon2 runs so far (statistics, tests)

    def _digest(self, password_hash: str, user: str, password: str) -> bytes:
        msg = f"{password_hash}\x00{user}\x00{password}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def _blocked_for(self, client: str, now: float) -> float:
        with self._lock:
            fails = self._failures.get(client)
            if not fails:
                return 0.0
            while fails and now - fails[0] >= self._window:
                fails.popleft()
            if len(fails) < self._max_failures:
                return 0.0
            return self._window - (now - fails[0])

    def _record_failure(self, client: str, now: float) -> None:
        with self._lock:
            fails = self._failures.pop(client, None) or deque(maxlen=self._max_failures)
            fails.append(now)
            self._failures[client] = fails
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)

    def check(self, header: str | None, client: str) -> AuthResult:
        """Check an ``Authorization`` header value sent by ``client`` (its address)."""
        creds = parse_basic(header)
        password_hash = self._get_hash()
        if creds is not None and password_hash:
            digest = self._digest(password_hash, *creds)
            with self._lock:
                if digest in self._known:
                    return AuthResult(AuthOutcome.OK)
        now = self._clock()
        wait = self._blocked_for(client, now)
        if wait > 0:
            return AuthResult(AuthOutcome.RATE_LIMITED, wait)
        if creds is None:
            return AuthResult(AuthOutcome.UNAUTHORIZED)  # nothing sent: no failure counted
        user, password = creds
        ok = False
        if hmac.compare_digest(user.encode(), self._user().encode()) and password_hash:
            if not self._slots.acquire(timeout=self._busy_wait):
                return AuthResult(AuthOutcome.BUSY, self._busy_wait)
            try:
                # NB: failures may have piled up while this request waited for a slot.
                wait = self._blocked_for(client, self._clock())
                if wait > 0:
                    return AuthResult(AuthOutcome.RATE_LIMITED, wait)
                self.verifications += 1
                ok = verify_password(password_hash, password)
            finally:
                self._slots.release()
        if not ok or not password_hash:
            self._record_failure(client, self._clock())
            return AuthResult(AuthOutcome.UNAUTHORIZED)
        with self._lock:
            self._known[self._digest(password_hash, user, password)] = None
            while len(self._known) > 8:
                self._known.popitem(last=False)
            self._failures.pop(client, None)
        return AuthResult(AuthOutcome.OK)


def basic_auth_dependency(
    user: str | Callable[[], str], get_hash: Callable[[], str | None]
) -> Callable[..., str]:
    """A FastAPI dependency that demands HTTP basic credentials, checked by an :class:`Authenticator`.

    It is a plain function, so FastAPI runs it in its thread pool: argon2's deliberate cost
    never blocks the event loop.
    """
    from fastapi import HTTPException, Request

    auth = Authenticator(user, get_hash)

    def check(request: Request) -> str:
        client = request.client.host if request.client else "?"
        result = auth.check(request.headers.get("authorization"), client)
        if not result.ok:
            detail = {
                AuthOutcome.UNAUTHORIZED: "admin credentials required",
                AuthOutcome.RATE_LIMITED: "too many failed logins from this address; retry later",
                AuthOutcome.BUSY: "too many logins being checked; retry later",
            }[result.outcome]
            raise HTTPException(status_code=result.status, detail=detail, headers=result.headers())
        creds = parse_basic(request.headers.get("authorization"))
        return creds[0] if creds else ""

    # NB: the annotation is a string here (future annotations) naming a lazily imported class;
    # FastAPI needs the class itself to see the request parameter.
    check.__annotations__["request"] = Request
    return check
