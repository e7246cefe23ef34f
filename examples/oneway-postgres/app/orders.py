"""The example's application: a WSGI app that keeps orders in PostgreSQL through the domain's data source.

- ``GET /health``: ``ok <server>:<port>`` when a query on the primary works, else 503.
- ``POST /orders`` (body: item): inserts an order, answers its id.
- ``GET /orders``: the last ten orders.

``datasource("orders")`` is the domain's psycopg pool (``datasource.orders.*`` in domain1.properties).
After a database failover a request that was running gets psycopg's error (answered 503 here,
the client retries); new requests reach the new primary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import psycopg_pool

from kagemusha.appserver import datasource

SCHEMA = "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, item text NOT NULL, at timestamptz DEFAULT now())"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    try:
        with datasource("orders").connection() as conn:
            if path == "/health":
                conn.execute("SELECT 1")
                body, status = f"ok {conn.info.host}:{conn.info.port}", "200 OK"
            elif path == "/orders" and method == "POST":
                item = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode() or "?"
                conn.execute(SCHEMA)
                row = conn.execute("INSERT INTO orders (item) VALUES (%s) RETURNING id", [item]).fetchone()
                body, status = f"{row[0] if row else ''}", "201 Created"
            elif path == "/orders":
                conn.execute(SCHEMA)
                rows = conn.execute("SELECT id, item FROM orders ORDER BY id DESC LIMIT 10").fetchall()
                body, status = "\n".join(f"{i} {item}" for i, item in rows), "200 OK"
            else:
                body, status = "not found", "404 Not Found"
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        body, status = f"database unavailable: {exc.__class__.__name__}", "503 Service Unavailable"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode() + b"\n"]
