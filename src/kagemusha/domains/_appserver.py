"""The domain's application server process: uvicorn serving ``domain.app`` on inherited sockets.

Run by the domain master as ``python -m kagemusha.domains._appserver <domain dir> <workers>
<access log>`` with the listening sockets in ``KAGEMUSHA_APP_FDS`` (``http:5,https:6``; either
may be absent when its port is 0), the TLS certificate and key files in
``KAGEMUSHA_TLS_CERT``/``KAGEMUSHA_TLS_KEY``, and the write end of a pipe in
``KAGEMUSHA_READY_FD``: one line ``ready`` is written there once every listener serves (the
master waits for it instead of polling the port).

``domain.app`` may be ASGI or WSGI (wrapped with a2wsgi). One application object serves HTTP and
HTTPS alike: two uvicorn servers in one event loop share it (its lifespan runs once, on the
first). With ``domain.workers`` > 1 this process forks the workers before anything is imported
(each imports the app itself), forwards SIGTERM to them, and replaces a worker that dies while
the domain is not stopping; all inherit the domain's tag.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["create_app", "exit_now", "is_asgi", "load_app", "loop_factory", "main", "server_config", "uvicorn_log_config"]

ENV_APP = "KAGEMUSHA_DOMAIN_APP"
ENV_APP_PATH = "KAGEMUSHA_DOMAIN_APP_PATH"
ENV_APP_FDS = "KAGEMUSHA_APP_FDS"
ENV_READY_FD = "KAGEMUSHA_READY_FD"
ENV_TLS_CERT = "KAGEMUSHA_TLS_CERT"
ENV_TLS_KEY = "KAGEMUSHA_TLS_KEY"
ENV_DOMAIN_NAME = "KAGEMUSHA_DOMAIN_NAME"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def is_asgi(obj: Any) -> bool:
    """Whether ``obj`` is an ASGI application (a coroutine function or an object with one as ``__call__``)."""
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


def load_app(import_string: str, paths: list[str]) -> Any:
    """Import ``module:attribute`` with ``paths`` first on ``sys.path``; WSGI apps come back wrapped."""
    for p in reversed(paths):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    module_name, _, attr = import_string.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if is_asgi(obj):
        return obj
    from a2wsgi import WSGIMiddleware

    return WSGIMiddleware(obj)


def _welcome_app(name: str) -> ASGIApp:
    body = f"kagemusha domain {name}: no application deployed\n".encode()

    async def app(
        scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
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
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body})

    return app


def create_app() -> Any:
    """uvicorn factory: the domain's application, from the environment the master set."""
    import_string = os.environ.get(ENV_APP, "")
    if not import_string:
        return _welcome_app(os.environ.get(ENV_DOMAIN_NAME, "?"))
    paths = [p for p in os.environ.get(ENV_APP_PATH, "").split(os.pathsep) if p]
    # -- kagemusha data sources (issue 13 item 3; kagemusha.domains._datasource): the domain's pools are
    # installed before the app is imported and opened/closed around the app's lifespan.
    from kagemusha.domains._datasource import install_datasources, with_datasources

    sources = install_datasources(os.environ.get("KAGEMUSHA_DOMAIN"), os.environ.get(ENV_DOMAIN_NAME, ""))
    return with_datasources(load_app(import_string, paths), sources)
    # -- end of the data-source hook


def uvicorn_log_config(logs: Path, *, access_log: bool = True) -> dict[str, Any]:
    """uvicorn logging to rotated files in the domain's ``logs/``."""
    fmt = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

    def handler(filename: str, cls: str = "logging.handlers.RotatingFileHandler") -> dict[str, Any]:
        return {
            "class": cls,
            "formatter": "plain",
            "filename": str(logs / filename),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
        }

    # NB: one record per request: the access log is written in batches, its stamp made once a
    # second (kagemusha.domains._accesslog); the same lines as the server log's format.
    access = {
        **handler("access.log", "kagemusha.domains._accesslog.BufferedRotatingFileHandler"),
        "formatter": "access",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": fmt},
            "access": {"()": "kagemusha.domains._accesslog.AccessLogFormatter"},
        },
        "handlers": {"server": handler("server.log"), "access": access},
        "loggers": {
            "uvicorn": {"handlers": ["server"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {
                "handlers": ["access"],
                "level": "INFO" if access_log else "WARNING",
                "propagate": False,
            },
        },
        "root": {"handlers": ["server"], "level": "INFO"},
    }


def _parse_fds(value: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in value.split(","):
        name, sep, fd = item.partition(":")
        if sep:
            out[name] = int(fd)
    return out


def _signal_ready(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.write(fd, b"ready\n")
    except OSError:
        pass  # the master is gone: it will not read it
    finally:
        os.close(fd)


def server_config(
    app: Any, *, access_log: bool, first: bool = True, tls: tuple[str, str] | None = None
) -> Any:
    """The ``uvicorn.Config`` of one listener of the app server.

    NB: the HTTP implementation, the event loop, the limits and timeouts stay uvicorn's defaults,
    so a domain serves requests exactly as ``uvicorn app`` does on this machine (httptools and
    uvloop when installed, h11 and asyncio otherwise); a test guards it. What differs is only
    what the domain owns: logging (``log_config=None``: configured by :func:`main`), no
    ``Server`` header, no ``X-Forwarded-*`` rewriting (the domain is the endpoint of its VIP),
    the app's lifespan run once (on the first listener), and the sockets, which are inherited.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        log_config=None,
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
        lifespan="auto" if first else "off",  # the app's startup and shutdown run once
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )


async def serve(listeners: dict[str, socket.socket], *, access_log: bool, ready_fd: int | None) -> int:
    """Serve the app on every listener (``http`` plain, ``https`` with TLS) until SIGTERM/SIGINT."""
    import asyncio

    import uvicorn

    class _Server(uvicorn.Server):
        """A server that leaves signals to us and says when it serves."""

        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self.up = asyncio.Event()

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            self.up.set()

    app = create_app()
    servers: list[tuple[_Server, socket.socket]] = []
    for name, sock in listeners.items():
        tls = None
        if name == "https":
            tls = (os.environ[ENV_TLS_CERT], os.environ[ENV_TLS_KEY])
        config = server_config(app, access_log=access_log, first=not servers, tls=tls)
        servers.append((_Server(config), sock))

    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server, _ in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    tasks: list[asyncio.Task[None]] = []
    for server, sock in servers:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        tasks.append(task)
        # NB: the next listener starts once this one serves: the first runs the app's startup.
        up = asyncio.ensure_future(server.up.wait())
        await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        if task.done():
            stop()
            break
    if all(server.up.is_set() for server, _ in servers):
        _signal_ready(ready_fd)
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and isinstance(task.exception(), SystemExit):
            return 3  # the app's startup failed (uvicorn's STARTUP_FAILURE)
    return 0 if all(server.started for server, _ in servers) else 3


def loop_factory() -> Callable[[], Any] | None:
    """The event loop uvicorn would run the app on (uvloop when installed, as ``uvicorn app``)."""
    import uvicorn

    # NB: making a Config configures logging: log_config=None, or it would reconfigure it, and
    # access_log left True, or it would take the access log's handler away
    factory: Callable[[], Any] | None = uvicorn.Config(app="unused:app", log_config=None).get_loop_factory()
    return factory


def _serve_process(listeners: dict[str, socket.socket], *, access_log: bool, ready_fd: int | None) -> int:
    import asyncio

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(serve(listeners, access_log=access_log, ready_fd=ready_fd))
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 3


def _prefork(
    workers: int, listeners: dict[str, socket.socket], *, access_log: bool, ready_fd: int | None
) -> int:
    """Fork ``workers`` serving processes; readiness once each has said so; restart the ones that die."""
    ready_r, ready_w = os.pipe()
    children: set[int] = set()
    stopping = False
    master_ready = ready_fd  # None once handed on (a later worker must not close a reused number)

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                with contextlib.suppress(OSError):
                    os.close(ready_r)
                if master_ready is not None:
                    os.close(master_ready)  # the parent says when every worker is ready
                worker_ready = os.dup(ready_w) if ready_w >= 0 else None
                code = _serve_process(listeners, access_log=access_log, ready_fd=worker_ready)
            finally:
                exit_now(code)  # NB: flushes the worker's buffered access log
        children.add(pid)

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(workers):
        spawn()
    os.close(ready_w)
    ready_w = -1
    seen = 0
    while seen < workers:
        chunk = os.read(ready_r, 64)  # NB: EOF once every worker said ready or died
        if not chunk:
            break
        seen += chunk.count(b"\n")
    os.close(ready_r)
    if master_ready is not None:
        if seen >= workers:
            _signal_ready(master_ready)
        else:
            os.close(master_ready)
        master_ready = None
    failures = 0
    startup_failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if stopping:
            continue
        failures += 1
        if os.waitstatus_to_exitcode(status) == 3 or failures > 10 * workers:
            startup_failed = True
            forward(signal.SIGTERM, None)  # the app cannot start: stop the rest, report it
            continue
        spawn()
    return 3 if startup_failed else 0


def main(argv: list[str] | None = None) -> int:
    """Serve the domain's app on the inherited sockets until told to stop."""
    import logging.config

    args = sys.argv[1:] if argv is None else argv
    domain_dir = Path(args[0])
    workers = int(args[1]) if len(args) > 1 else 1
    access_log = (args[2] if len(args) > 2 else "true") == "true"
    listeners = {
        name: socket.socket(fileno=fd) for name, fd in _parse_fds(os.environ.get(ENV_APP_FDS, "")).items()
    }
    ready = os.environ.get(ENV_READY_FD)
    ready_fd = int(ready) if ready else None
    logging.config.dictConfig(uvicorn_log_config(domain_dir / "logs", access_log=access_log))
    if workers > 1:
        return _prefork(workers, listeners, access_log=access_log, ready_fd=ready_fd)
    return _serve_process(listeners, access_log=access_log, ready_fd=ready_fd)


def exit_now(code: int) -> None:
    """End the process at once once its work is done: logs flushed, no interpreter teardown.

    NB: tearing down an interpreter that imported a web stack takes hundreds of milliseconds of
    CPU (module and object finalisation), on the failover path of every stop. uvicorn itself
    ends the same way after a graceful shutdown (it re-raises SIGTERM with the default handler),
    so an app's ``atexit`` handlers do not run under raw uvicorn either: use the lifespan.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
