"""WSGI test app using the domain's data source ``db`` (kagemusha.appserver.datasource).

``GET /`` inserts a row (needs the primary) and answers ``ok <server port> <primary|standby> <id>``;
``GET /slow?s=N`` holds a transaction for N seconds first. A psycopg error is answered with 503 and
``error <ExceptionClass>: <message>`` (the app sees psycopg's error; nothing is retried for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import psycopg
import psycopg_pool

from kagemusha.appserver import datasource


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        with datasource("db").connection() as conn:
            if path == "/slow":
                conn.execute("SELECT pg_sleep(%s)", [float(qs.get("s", ["5"])[0])])
            row = conn.execute(
                "INSERT INTO hits DEFAULT VALUES RETURNING id, inet_server_port(), pg_is_in_recovery()"
            ).fetchone()
            assert row is not None
            body = f"ok {row[1]} {'standby' if row[2] else 'primary'} {row[0]}"
            status = "200 OK"
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        body = f"error {exc.__class__.__name__}: {' '.join(str(exc).split())}"
        status = "503 Service Unavailable"
    start_response(status, [("Content-Type", "text/plain")])
    return [body.encode() + b"\n"]
