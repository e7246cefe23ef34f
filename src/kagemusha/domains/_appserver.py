"""The domain's application server process: uvicorn serving ``domain.app`` on an inherited socket.

Run by the domain master as ``python -m kagemusha.domains._appserver <domain dir>`` with the
listening socket's descriptor in ``KAGEMUSHA_APP_FD``. ``domain.app`` may be ASGI or WSGI
(wrapped with a2wsgi); with ``domain.workers`` > 1 uvicorn's multiprocess supervisor forks the
workers, all inheriting the domain's tag.
"""

from __future__ import annotations

import importlib
import inspect
import os
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["create_app", "is_asgi", "load_app", "main", "uvicorn_log_config"]

ENV_APP = "KAGEMUSHA_DOMAIN_APP"
ENV_APP_PATH = "KAGEMUSHA_DOMAIN_APP_PATH"
ENV_APP_FD = "KAGEMUSHA_APP_FD"
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

    def handler(filename: str) -> dict[str, Any]:
        return {
            "class": "logging.handlers.RotatingFileHandler",
            "formatter": "plain",
            "filename": str(logs / filename),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
        }

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {"server": handler("server.log"), "access": handler("access.log")},
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


def main(argv: list[str] | None = None) -> int:
    """Serve the domain's app on the inherited socket until told to stop."""
    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess

    args = sys.argv[1:] if argv is None else argv
    domain_dir = Path(args[0])
    workers = int(args[1]) if len(args) > 1 else 1
    access_log = (args[2] if len(args) > 2 else "true") == "true"
    fd = int(os.environ[ENV_APP_FD])
    sock = socket.socket(fileno=fd)
    log_config = uvicorn_log_config(domain_dir / "logs", access_log=access_log)
    config = uvicorn.Config(
        "kagemusha.domains._appserver:create_app",
        factory=True,
        workers=workers,
        log_config=log_config,
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
    )
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
