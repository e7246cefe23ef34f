"""Admin credentials: argon2 hashes only; the plain password is never written or logged."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["basic_auth_dependency", "hash_password", "verify_password"]


def _hasher() -> PasswordHasher:
    return PasswordHasher()


def hash_password(password: str) -> str:
    """A salted argon2id hash of ``password``."""
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (False for a missing or malformed hash)."""
    if not password_hash:
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def basic_auth_dependency(user: str, get_hash: Callable[[], str | None]) -> Callable[..., str]:
    """A FastAPI dependency that demands HTTP basic credentials matching ``user`` and the hash.

    It is a plain function, so FastAPI runs it in its thread pool: argon2's deliberate cost
    never blocks the event loop.
    """
    from fastapi import Depends, HTTPException, status
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    security = HTTPBasic(realm="kagemusha domain", auto_error=False)

    def check(credentials: HTTPBasicCredentials | None = Depends(security)) -> str:  # noqa: B008
        ok = (
            credentials is not None
            and hmac.compare_digest(credentials.username.encode(), user.encode())
            and verify_password(get_hash(), credentials.password)
        )
        if not ok:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="admin credentials required",
                headers={"WWW-Authenticate": 'Basic realm="kagemusha domain"'},
            )
        assert credentials is not None
        return credentials.username

    return check
