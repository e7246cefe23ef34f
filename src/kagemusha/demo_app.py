"""A small ASGI application for the demo and the end-to-end tests: it says which node serves it and
keeps acknowledged writes on the domain's disk.

- ``GET /``: ``kagemusha demo: domain1 served by n1``
- ``PUT /kv/<key>`` (body = value): appended to ``<domain dir>/state/kv.log`` and fsynced *before* 200.
- ``GET /kv/<key>``: the last value written, 404 when none.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

__all__ = ["app"]


def _log_path() -> Path:
    base = os.environ.get("KAGEMUSHA_DOMAIN") or os.getcwd()
    p = Path(base) / "state" / "kv.log"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _append(key: str, value: str) -> None:
    with open(_log_path(), "a", encoding="utf-8") as f:
        f.write(f"{key}\t{value}\n")
        f.flush()
        os.fsync(f.fileno())


def _read(key: str) -> str | None:
    try:
        lines = _log_path().read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        k, _, v = line.partition("\t")
        if k == key:
            found = v
    return found


async def _send(send: Any, status: int, body: str) -> None:
    data = body.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    method: str = scope["method"]
    node = os.environ.get("KAGEMUSHA_NODE", os.uname().nodename)
    domain = Path(os.environ.get("KAGEMUSHA_DOMAIN", "domain")).name
    if path == "/":
        await _send(send, 200, f"kagemusha demo: {domain} served by {node}\n")
        return
    if path.startswith("/kv/") and len(path) > 4:
        key = path[4:]
        if method in ("PUT", "POST"):
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            await asyncio.to_thread(_append, key, body.decode("utf-8", "replace").replace("\n", " "))
            await _send(send, 200, "ok\n")
            return
        if method == "GET":
            v = await asyncio.to_thread(_read, key)
            await _send(send, 200 if v is not None else 404, (v if v is not None else "not found") + "\n")
            return
    await _send(send, 404, "not found\n")
