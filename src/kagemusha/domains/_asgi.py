"""The few ASGI helpers the domain's own small APIs need (admin API, naming service).

NB: these APIs are plain ASGI, not FastAPI: importing FastAPI and pydantic costs the domain
master hundreds of milliseconds at every start, on the failover path, for three routes each.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kagemusha.domains._auth import Authenticator, AuthOutcome

__all__ = ["Receive", "Scope", "Send", "authorize", "header", "read_json_body", "send_json"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_BODY = 64 * 1024

_REFUSALS = {
    AuthOutcome.UNAUTHORIZED: "admin credentials required",
    AuthOutcome.RATE_LIMITED: "too many failed logins from this address; retry later",
    AuthOutcome.BUSY: "too many logins being checked; retry later",
}


def header(scope: Scope, name: str) -> str | None:
    """The value of request header ``name`` (lower case), or None."""
    key = name.encode()
    for k, v in scope.get("headers", ()):
        if k == key:
            return bytes(v).decode("latin-1")
    return None


async def send_json(send: Send, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(data).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_json_body(receive: Receive) -> Any:
    """The request's JSON body (at most 64 KiB).

    Raises:
        ValueError: not JSON, or too large.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ValueError("client disconnected")
        chunk = bytes(msg.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY:
            raise ValueError("body too large")
        chunks.append(chunk)
        if not msg.get("more_body"):
            break
    return json.loads(b"".join(chunks) or b"null")


async def authorize(auth: Authenticator, scope: Scope, send: Send) -> bool:
    """Check the request's basic credentials (argon2 in a worker thread); answer the refusal if any."""
    client = scope.get("client") or ("?", 0)
    result = await asyncio.to_thread(auth.check, header(scope, "authorization"), str(client[0]))
    if result.ok:
        return True
    await send_json(send, result.status, {"detail": _REFUSALS[result.outcome]}, result.headers())
    return False
