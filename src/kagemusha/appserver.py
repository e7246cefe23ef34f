"""What an application deployed to a kagemusha domain can ask of its domain: its data sources.

Usage (WSGI, e.g. Flask)::

    from kagemusha.appserver import datasource

    def view():
        with datasource("db").connection() as conn:      # psycopg_pool.ConnectionPool
            return conn.execute("SELECT now()").fetchone()

Usage (ASGI, e.g. FastAPI or Starlette)::

    from kagemusha.appserver import async_datasource

    async def view():
        async with async_datasource("db").connection() as conn:   # psycopg_pool.AsyncConnectionPool
            cur = await conn.execute("SELECT now()")
            return await cur.fetchone()

The data sources are the domain's ``datasource.<name>.*`` properties (see docs/domains.md). The
pools are opened when the domain's application server starts (before the app's own startup) and
closed when the domain stops; connections are checked before they are handed out. After a
primary failover, new connections go to the new primary (multi-host URL with
``target_session_attrs=read-write``); a transaction that was running gets psycopg's error and is
not retried behind the app's back.

NB: this module holds the data sources of the current application-server process (one per
uvicorn worker), installed by the domain before the app is loaded; it is the only process-wide
state kagemusha keeps, because an app must reach its pools from anywhere, as with JNDI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kagemusha.errors import DomainError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from kagemusha.domains._datasource import DataSources

__all__ = ["async_datasource", "datasource"]

_sources: DataSources | None = None


def _install(sources: DataSources | None) -> None:
    """Set (or clear) this process's data sources; called by the domain's application server."""
    global _sources
    _sources = sources


def _current() -> DataSources:
    if _sources is None:
        raise DomainError(
            "no data sources here: kagemusha.appserver works inside an application deployed to a kagemusha"
            " domain that has datasource.<name>.url in its properties"
        )
    return _sources


def datasource(name: str) -> ConnectionPool:
    """The sync connection pool of the domain's data source ``name`` (WSGI apps, threadpool code).

    Raises:
        DomainError: not inside a domain, or the domain has no data source ``name``.
    """
    return _current().sync_pool(name)


def async_datasource(name: str) -> AsyncConnectionPool:
    """The async connection pool of the domain's data source ``name`` (ASGI apps).

    Raises:
        DomainError: not inside a domain, the domain has no data source ``name``, or the domain
            serves a WSGI app (use :func:`datasource`).
    """
    return _current().async_pool(name)
