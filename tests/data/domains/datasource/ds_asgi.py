"""ASGI test app using the domain's data source ``db`` (kagemusha.appserver.async_datasource).

Same answers as ``ds_wsgi``. It handles the lifespan protocol itself (``started`` is set by its
own startup), so the test also pins that the domain's pools wrap an app with a lifespan of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import psycopg
import psycopg_pool

from kagemusha.appserver import async_datasource

state = {"started": False}


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                # the pool is open before the app's own startup runs
                async_datasource("db")
                state["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    qs = parse_qs(scope.get("query_string", b"").decode())
    try:
        async with async_datasource("db").connection() as conn:
            if scope["path"] == "/slow":
                await conn.execute("SELECT pg_sleep(%s)", [float(qs.get("s", ["5"])[0])])
            cur = await conn.execute(
                "INSERT INTO hits DEFAULT VALUES RETURNING id, inet_server_port(), pg_is_in_recovery()"
            )
            row = await cur.fetchone()
            assert row is not None
            body = f"ok {row[1]} {'standby' if row[2] else 'primary'} {row[0]}"
            status = 200 if state["started"] else 500
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        body = f"error {exc.__class__.__name__}: {' '.join(str(exc).split())}"
        status = 503
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body.encode() + b"\n"})
