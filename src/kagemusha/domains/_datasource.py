"""Domain data sources: PostgreSQL connection pools named in the domain's properties (the seed's chapter 4).

The seed registers an Oracle RAC JDBC data source whose URL lists two addresses with
``FAILOVER=ON`` and ``LOAD_BALANCE=OFF``, then runs the console's "test data source". Here a data
source is a psycopg pool over a libpq URL; libpq's multi-host URL is the address list
(``postgresql://db1:5432,db2:5432/app?target_session_attrs=read-write``): hosts are tried in
order, the first that accepts a read-write session wins, no load balancing.

Properties of data source ``<name>`` (letters, digits, ``_``, ``-``)::

    datasource.<name>.url            libpq URI or conninfo string (required; no password in it)
    datasource.<name>.user           database user (default: libpq's)
    datasource.<name>.password_file  absolute path of a file holding the password, mode 0600 (or 0400)
    datasource.<name>.min_size       connections kept open (default 1)
    datasource.<name>.max_size       most connections (default 10)
    datasource.<name>.timeout        seconds a request waits for a connection (default 30)

Validation is split in two so that a missing password file never stops ``stop`` or ``list``
from reading the properties: :func:`datasource_errors` checks the keys (no I/O, called by
``parse_properties``); :func:`check_password_files` checks the files (``create``, domain start,
``test-datasource``).

The pools live in the application-server process (every uvicorn worker has its own), opened by
:class:`DataSourceApp` around the app's lifespan and closed when the domain stops; apps reach them
through :mod:`kagemusha.appserver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import stat
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kagemusha.errors import ConfigError, DomainError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MIN_SIZE",
    "DEFAULT_TIMEOUT",
    "DataSourceApp",
    "DataSourceConfig",
    "DataSources",
    "check_password_files",
    "datasource_errors",
    "install_datasources",
    "parse_datasources",
    "probe_datasource",
    "with_datasources",
]

log = logging.getLogger("kagemusha.datasource")

PREFIX = "datasource."
FIELDS = ("url", "user", "password_file", "min_size", "max_size", "timeout")
DEFAULT_MIN_SIZE = 1
DEFAULT_MAX_SIZE = 10
DEFAULT_TIMEOUT = 30.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class DataSourceConfig:
    """One data source of a domain, validated (the password itself is never held here)."""

    name: str
    url: str
    user: str | None = None
    password_file: Path | None = None
    min_size: int = DEFAULT_MIN_SIZE
    max_size: int = DEFAULT_MAX_SIZE
    timeout: float = DEFAULT_TIMEOUT

    def key(self, field: str) -> str:
        """The properties key of ``field`` (``datasource.<name>.<field>``)."""
        return f"{PREFIX}{self.name}.{field}"


def _split(key: str) -> tuple[str, str] | None:
    if not key.startswith(PREFIX):
        return None
    rest = key[len(PREFIX) :]
    name, dot, field = rest.rpartition(".")
    if not dot:
        return rest, ""
    return name, field


def _conninfo_errors(key: str, url: str) -> list[str]:
    """What is wrong with a libpq URL/conninfo (parsed by libpq itself), or nothing."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return [f"not a valid libpq URL or conninfo string: {msg}"]
    if params.get("password") is not None:
        base = key.rsplit(".", 1)[0]
        return [
            f"holds a password; a password is never kept in the properties: put it in a file of mode 0600 named by {base}.password_file"
        ]
    if params.get("passfile") is not None:
        return [f"names a passfile; use {key.rsplit('.', 1)[0]}.password_file instead"]
    return []


def _parse(raw: Mapping[str, str], loc: str) -> tuple[dict[str, DataSourceConfig], list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    fields: dict[str, dict[str, str]] = {}
    for key, value in raw.items():
        parts = _split(key)
        if parts is None:
            continue
        name, field = parts
        where = f"{loc}: {key}"
        if not _NAME_RE.match(name):
            errors.append((where, f"invalid data source name {name!r} (letters, digits, '_', '-')"))
            continue
        if field == "password":
            hint = f"write it to a file of mode 0600 and name that file with {PREFIX}{name}.password_file"
            errors.append((where, f"a password is never kept in the properties: {hint}"))
            continue
        if field not in FIELDS:
            errors.append((where, f"unknown data source key (expected {PREFIX}{name}.<{'|'.join(FIELDS)}>)"))
            continue
        fields.setdefault(name, {})[field] = value.strip()
    out: dict[str, DataSourceConfig] = {}
    for name, f in fields.items():
        n_errors = len(errors)

        def err(field: str, msg: str, name: str = name) -> None:
            errors.append((f"{loc}: {PREFIX}{name}.{field}", msg))

        url = f.get("url", "")
        if not url:
            err("url", "missing (every data source needs a libpq URL or conninfo string)")
        else:
            for msg in _conninfo_errors(f"{PREFIX}{name}.url", url):
                err("url", msg)
        user = f.get("user") or None
        pfile: Path | None = None
        if f.get("password_file"):
            pfile = Path(f["password_file"])
            if not pfile.is_absolute():
                err("password_file", f"must be an absolute path, got {f['password_file']!r}")
        sizes: dict[str, int] = {}
        for field, low, default in (("min_size", 0, DEFAULT_MIN_SIZE), ("max_size", 1, DEFAULT_MAX_SIZE)):
            if field not in f:
                sizes[field] = default
                continue
            try:
                sizes[field] = int(f[field])
            except ValueError:
                err(field, f"must be an integer >= {low}, got {f[field]!r}")
                continue
            if sizes[field] < low:
                err(field, f"must be an integer >= {low}, got {sizes[field]}")
        if "min_size" in f and "max_size" not in f and sizes.get("min_size", 0) > DEFAULT_MAX_SIZE:
            sizes["max_size"] = sizes["min_size"]
        if (
            "min_size" in sizes
            and "max_size" in sizes
            and sizes["min_size"] > sizes["max_size"]
            and len(errors) == n_errors
        ):
            err("min_size", f"is {sizes['min_size']}, more than max_size {sizes['max_size']}")
        timeout = DEFAULT_TIMEOUT
        if "timeout" in f:
            try:
                timeout = float(f["timeout"])
                if not math.isfinite(timeout) or timeout <= 0:
                    raise ValueError
            except ValueError:
                err("timeout", f"must be a number of seconds > 0, got {f['timeout']!r}")
        if len(errors) == n_errors:
            out[name] = DataSourceConfig(
                name=name,
                url=url,
                user=user,
                password_file=pfile,
                min_size=sizes["min_size"],
                max_size=sizes["max_size"],
                timeout=timeout,
            )
    return out, errors


def datasource_errors(raw: Mapping[str, str], loc: str) -> list[tuple[str, str]]:
    """Errors of the ``datasource.*`` keys of ``raw`` as ``(location, message)``; no file is read."""
    return _parse(raw, loc)[1]


def parse_datasources(raw: Mapping[str, str], *, source: str = "<properties>") -> dict[str, DataSourceConfig]:
    """The data sources of a domain's properties, by name.

    Raises:
        ConfigError: a ``datasource.*`` key is wrong; each error names the file and the key.
    """
    out, errors = _parse(raw, source)
    if errors:
        raise ConfigError(errors)
    return out


def _password_file_error(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_mode & 0o077:
        return f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; a password file must be 0600 (or 0400)"
    if not os.access(path, os.R_OK):
        return f"cannot read {path}: permission denied"
    return None


def check_password_files(sources: Mapping[str, DataSourceConfig], *, source: str) -> None:
    """Every data source's password file exists, is a regular file of mode 0600 (or stricter) and readable.

    Raises:
        ConfigError: one error per bad file, naming the key.
    """
    errors = []
    for ds in sources.values():
        if ds.password_file is not None:
            msg = _password_file_error(ds.password_file)
            if msg:
                errors.append((f"{source}: {ds.key('password_file')}", msg))
    if errors:
        raise ConfigError(errors)


def read_password(ds: DataSourceConfig) -> str | None:
    """The password from ``ds.password_file`` (first line, without its end of line), checked first.

    Raises:
        ConfigError: the file is missing, unreadable or readable by others.
    """
    if ds.password_file is None:
        return None
    msg = _password_file_error(ds.password_file)
    if msg:
        raise ConfigError([(ds.key("password_file"), msg)])
    text = ds.password_file.read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""


def connect_kwargs(ds: DataSourceConfig) -> dict[str, Any]:
    """Keyword arguments for psycopg's connect besides the URL: user, password, connect_timeout.

    NB: ``connect_timeout`` applies to each host of a multi-host URL; without one in the URL a host
    that drops packets would hold a request for libpq's default (forever), so it gets
    ``min(timeout, 5)`` seconds (at least 2, libpq's minimum that is honoured).
    """
    from psycopg.conninfo import conninfo_to_dict

    kwargs: dict[str, Any] = {}
    if ds.user:
        kwargs["user"] = ds.user
    password = read_password(ds)
    if password is not None:
        kwargs["password"] = password
    if "connect_timeout" not in conninfo_to_dict(ds.url):
        kwargs["connect_timeout"] = max(2, min(5, math.ceil(ds.timeout)))
    return kwargs


def server_version(conn: Any) -> str:
    """``15.18`` from the server's ``server_version`` parameter (``15.18 (Debian 15.18-0+deb12u1)``)."""
    raw = conn.info.parameter_status("server_version") or ""
    if raw:
        return str(raw).split()[0]
    v = int(conn.info.server_version)
    return f"{v // 10000}.{v % 10000}"


def probe_datasource(ds: DataSourceConfig) -> str:
    """Connect once with the data source's settings: ``<host>:<port> <primary|standby> PostgreSQL <version>``.

    The console's "test data source" of the seed (4.1 step 7).

    Raises:
        ConfigError: the password file is wrong.
        DomainError: the connection failed (one line, libpq's reason).
    """
    import psycopg

    kwargs = connect_kwargs(ds)
    try:
        with psycopg.connect(ds.url, autocommit=True, **kwargs) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            role = "standby" if row and row[0] else "primary"
            return f"{conn.info.host}:{conn.info.port} {role} PostgreSQL {server_version(conn)}"
    except psycopg.Error as exc:
        text = " ".join(str(exc).split()) or exc.__class__.__name__
        raise DomainError(f"data source {ds.name}: {text}") from exc


# -- pools in the application server -------------------------------------------------------------


class DataSources:
    """The pools of one application-server process, opened and closed with the app's lifespan.

    One pool per data source of the kind the app needs: the app's own kind (sync for WSGI, async
    for ASGI) is opened at startup; a sync pool asked for by an ASGI app (a threadpool endpoint)
    is opened on first use. ``datasource()`` and ``async_datasource()`` of
    :mod:`kagemusha.appserver` read them.
    """

    def __init__(self, domain: str, configs: Mapping[str, DataSourceConfig]) -> None:
        self.domain = domain
        self.configs = dict(configs)
        self._sync: dict[str, ConnectionPool] = {}
        self._async: dict[str, AsyncConnectionPool] = {}
        self._lock = threading.Lock()
        self._async_open = False

    def _config(self, name: str) -> DataSourceConfig:
        try:
            return self.configs[name]
        except KeyError:
            known = ", ".join(sorted(self.configs)) or "none"
            raise DomainError(
                f"domain {self.domain} has no data source {name!r} ({PREFIX}{name}.url is not set;"
                f" data sources: {known})"
            ) from None

    def _pool_args(self, ds: DataSourceConfig) -> dict[str, Any]:
        return {
            "conninfo": ds.url,
            "kwargs": connect_kwargs(ds),
            "min_size": ds.min_size,
            "max_size": ds.max_size,
            "timeout": ds.timeout,
            "name": f"{self.domain}/{ds.name}",
        }

    def sync_pool(self, name: str) -> ConnectionPool:
        """The sync pool of ``name``, created and opened (without waiting for a connection) on first use."""
        ds = self._config(name)
        with self._lock:
            pool = self._sync.get(name)
            if pool is None:
                from psycopg_pool import ConnectionPool

                pool = ConnectionPool(
                    **self._pool_args(ds), check=ConnectionPool.check_connection, open=False
                )
                # NB: open(wait=False): a database that is down must not keep the domain from starting;
                # requests wait up to ``timeout`` for a connection instead.
                pool.open(wait=False)
                self._sync[name] = pool
                log.info("domain=%s data source %s: pool opened (sync, %s)", self.domain, name, _where(ds))
            return pool

    def async_pool(self, name: str) -> AsyncConnectionPool:
        """The async pool of ``name`` (opened at the app's startup)."""
        ds = self._config(name)
        pool = self._async.get(name)
        if pool is None:
            if not self._async_open:
                raise DomainError(
                    f"async_datasource({name!r}) is for ASGI apps; domain {self.domain} serves a WSGI app:"
                    " use datasource()"
                )
            raise DomainError(f"data source {ds.name} of domain {self.domain} is not open")
        return pool

    async def open_async(self) -> None:
        """Create and open an async pool per data source (in the server's event loop)."""
        from psycopg_pool import AsyncConnectionPool

        self._async_open = True
        for name, ds in self.configs.items():
            if name in self._async:
                continue
            pool = AsyncConnectionPool(
                **self._pool_args(ds), check=AsyncConnectionPool.check_connection, open=False
            )
            await pool.open(wait=False)
            self._async[name] = pool
            log.info("domain=%s data source %s: pool opened (async, %s)", self.domain, name, _where(ds))

    def open_sync(self) -> None:
        for name in self.configs:
            self.sync_pool(name)

    async def close(self) -> None:
        """Close every pool (in-flight connections are closed; waiting requests get ``PoolClosed``)."""
        async_pools, self._async = self._async, {}
        for name, apool in async_pools.items():
            with contextlib.suppress(Exception):
                await apool.close(timeout=5.0)
            log.info("domain=%s data source %s: pool closed (async)", self.domain, name)
        with self._lock:
            sync_pools, self._sync = self._sync, {}
        for name, pool in sync_pools.items():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pool.close, 5.0)
            log.info("domain=%s data source %s: pool closed (sync)", self.domain, name)

    def statistics(self) -> dict[str, dict[str, int]]:
        """psycopg_pool's statistics per pool (``sync:<name>`` / ``async:<name>``)."""
        out = {f"sync:{n}": dict(p.get_stats()) for n, p in self._sync.items()}
        out.update({f"async:{n}": dict(p.get_stats()) for n, p in self._async.items()})
        return out


def _where(ds: DataSourceConfig) -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(ds.url)
    return f"host={params.get('host', '')} port={params.get('port', '')} dbname={params.get('dbname', '')}"


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


class DataSourceApp:
    """ASGI wrapper that opens the domain's pools before the app starts and closes them after it stops.

    For a WSGI app (``asgi=False``) the wrapper answers the lifespan protocol itself and opens sync
    pools; for an ASGI app it opens async pools, then hands the lifespan to the app (which may
    have its own startup/shutdown) and closes the pools once the app has shut down. An ASGI app
    without lifespan support is handled as uvicorn would: its startup is taken as done.
    A pool that cannot be opened (bad password file) fails the startup, so the domain does not
    start and ``start`` prints the reason.
    """

    def __init__(self, app: Any, sources: DataSources, *, asgi: bool) -> None:
        self.app = app
        self.sources = sources
        self.asgi = asgi

    async def _open(self) -> str | None:
        try:
            if self.asgi:
                await self.sources.open_async()
            else:
                await asyncio.to_thread(self.sources.open_sync)
        except ConfigError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - reported as the startup failure, the domain does not start
            return f"data sources of domain {self.sources.domain}: {exc.__class__.__name__}: {exc}"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        first = await receive()
        if first["type"] != "lifespan.startup":  # pragma: no cover - the server always starts first
            return
        failed = await self._open()
        if failed:
            log.error("%s", failed)
            await self.sources.close()
            await send({"type": "lifespan.startup.failed", "message": failed})
            return
        if not self.asgi:
            await self._own_lifespan(receive, send, started=False)
            return
        replayed = False
        started = False

        async def app_receive() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        async def app_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "lifespan.startup.complete":
                started = True
            elif (
                message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed")
                or message["type"] == "lifespan.startup.failed"
            ):
                await self.sources.close()
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if started:
                await self.sources.close()
                raise
            log.info("domain=%s: the app does not support lifespan; pools kept open", self.sources.domain)
            await self._own_lifespan(receive, send, started=False)

    async def _own_lifespan(self, receive: Receive, send: Send, *, started: bool) -> None:
        if not started:
            await send({"type": "lifespan.startup.complete"})
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.shutdown":
                await self.sources.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def install_datasources(domain_dir: str | None, domain: str) -> DataSources | None:
    """The data sources of the domain in ``domain_dir``, installed for :mod:`kagemusha.appserver`; None if it has none.

    Called in the application-server process before the app is imported, so an app may ask for
    a sync pool at import time.
    """
    if not domain_dir:
        return None
    from kagemusha.appserver import _install
    from kagemusha.domains._properties import load_properties

    props = load_properties(Path(domain_dir) / "config" / "domain.properties")
    configs = parse_datasources(props.raw, source=props.source)
    if not configs:
        return None
    sources = DataSources(domain or props.name, configs)
    _install(sources)
    return sources


def with_datasources(app: Any, sources: DataSources | None) -> Any:
    """``app`` wrapped in :class:`DataSourceApp` when the domain has data sources, else ``app`` itself."""
    if sources is None:
        return app
    from a2wsgi import WSGIMiddleware

    return DataSourceApp(app, sources, asgi=not isinstance(app, WSGIMiddleware))
