"""The domain master: one process per running domain, leader of the domain's session.

``python -m kagemusha.domains._runtime <domain dir>``, started by :func:`start_domain` with the
listening sockets inherited (``KAGEMUSHA_DOMAIN_FDS=http:5,admin:6,naming:7``). It

- starts the application server (``_appserver``, uvicorn) on the http socket and watches it;
- serves the admin API (health, status, graceful stop; HTTP basic against the argon2 hash)
  and the naming service;
- records its state in ``state/state.json``: ``starting`` until the app answers, ``running``,
  ``stopping``, then ``not running``.

Signals: SIGTERM/SIGINT = graceful stop (SIGTERM to the app server, wait for it as long as it
takes); SIGUSR1 = abandon a stop that took too long (``stop`` without ``--force`` timed out: the
domain keeps running). When the app server has exited, leftovers of the domain (children that
detached) are terminated before the master exits, so a stopped domain leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kagemusha.domains._layout import DomainLayout
from kagemusha.domains._procs import domain_processes, read_record, signal_procs, write_state
from kagemusha.domains._properties import DomainProperties, load_properties

__all__ = ["main", "quiet_server", "setup_logging"]

log = logging.getLogger("kagemusha.domain")

ENV_FDS = "KAGEMUSHA_DOMAIN_FDS"


def setup_logging(logs: Path, filename: str) -> None:
    """Log to a rotated file in ``logs/``."""
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(logs / filename, maxBytes=10 * 1024 * 1024, backupCount=5)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def parse_fds(value: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in value.split(","):
        if ":" in item:
            k, v = item.split(":", 1)
            out[k] = int(v)
    return out


def quiet_server(app: Any) -> Any:
    """A uvicorn server for ``app`` that leaves signal handling to its owner."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False)
    return _Server(config)


async def app_answers(host: str, port: int, *, timeout: float = 2.0) -> bool:
    """Whether the app on ``host:port`` answers an HTTP request (any status counts as an answer)."""
    import httpx

    from kagemusha.domains._properties import url_host

    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            await client.get(f"http://{url_host(host)}:{port}/")
        return True
    except httpx.HTTPError:
        return False


class Master:
    """The running domain."""

    def __init__(self, layout: DomainLayout, props: DomainProperties, fds: dict[str, int]) -> None:
        self.layout = layout
        self.props = props
        self.fds = fds
        self.state = "starting"
        self.started_at = time.time()
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_requested = asyncio.Event()
        self.abort_requested = False
        self.wakeup = asyncio.Event()
        self.detail = ""

    # -- state -------------------------------------------------------------------------------

    def set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        self.detail = detail
        pid = os.getpid()  # kept with "not running" too: the master is alive until it has exited
        extra: dict[str, Any] = {}
        if self.child is not None and state != "not running":
            extra["app_pid"] = self.child.pid
        write_state(self.layout.state_file, state, pid=pid, detail=detail, **extra)
        log.info("domain=%s state=%s%s", self.props.name, state, f" detail={detail!r}" if detail else "")

    def status(self) -> dict[str, Any]:
        return {
            "name": self.props.name,
            "state": self.state,
            "pid": os.getpid(),
            "app_pid": self.child.pid if self.child else None,
            "uptime": round(time.time() - self.started_at, 3),
            "app": self.props.app,
            "workers": self.props.workers,
            "advertised_host": self.props.advertised,
            "bind_address": self.props.bind_address,
            "admin_bind_address": self.props.admin_bind_address,
            "ports": dict(self.props.ports),
        }

    def request_stop(self) -> None:
        self.stop_requested.set()
        self.abort_requested = False
        self.wakeup.set()

    def abort_stop(self) -> None:
        self.abort_requested = True
        self.wakeup.set()

    # -- processes ---------------------------------------------------------------------------

    def start_app_server(self) -> None:
        env = dict(os.environ)
        env["KAGEMUSHA_APP_FD"] = str(self.fds["http"])
        env.pop(ENV_FDS, None)
        self.child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kagemusha.domains._appserver",
                str(self.layout.dir),
                str(self.props.workers),
                "false" if self.props.raw.get("domain.access.log", "true").lower() == "false" else "true",
            ],
            pass_fds=[self.fds["http"]],
            env=env,
            cwd=str(self.layout.dir),
            stdin=subprocess.DEVNULL,
        )
        os.close(self.fds["http"])
        log.info("domain=%s app server pid=%d app=%s", self.props.name, self.child.pid, self.props.app)

    def terminate_leftovers(self, grace: float = 2.0) -> None:
        """Terminate what is left of the domain (detached children) once the app server is gone."""
        from kagemusha.domains._procs import wait_gone

        record = read_record(self.layout.state_file)
        left = domain_processes(self.layout.dir, record)
        if not left:
            return
        log.warning("domain=%s terminating leftover processes %s", self.props.name, [p.pid for p in left])
        signal_procs(left, signal.SIGTERM)
        alive = wait_gone(left, timeout=grace)
        signal_procs(alive, signal.SIGKILL)
        wait_gone(alive, timeout=grace)

    async def supervise(self) -> int:
        assert self.child is not None
        stopping = False
        while True:
            rc = self.child.poll()
            if rc is not None:
                if stopping:
                    log.info("domain=%s app server stopped (rc=%s)", self.props.name, rc)
                    return 0
                what = "during start" if self.state == "starting" else "unexpectedly"
                self.detail = f"application server exited {what} with code {rc}"
                log.error("domain=%s %s", self.props.name, self.detail)
                return 1
            if self.stop_requested.is_set() and not stopping:
                stopping = True
                self.set_state("stopping")
                self.child.send_signal(signal.SIGTERM)
            elif stopping and self.abort_requested:
                stopping = False
                self.abort_requested = False
                self.stop_requested.clear()
                self.set_state("running", "a stop timed out; the domain keeps running")
            elif self.state == "starting" and await app_answers(self.props.probe_host, self.props.http_port):
                self.set_state("running")
                continue
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=0.1)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, self.abort_stop)
        self.set_state("starting")
        # NB: the app server starts first, so its startup overlaps the import of FastAPI below.
        self.start_app_server()
        from kagemusha.domains._auth import basic_auth_dependency
        from kagemusha.domains._naming import make_naming_app

        auth = basic_auth_dependency(self.props.admin_user, self.layout.read_hash)
        servers = [quiet_server(make_admin_app(self, auth))]
        socks = [socket.socket(fileno=self.fds["admin"])]
        if "naming" in self.fds:
            servers.append(quiet_server(make_naming_app(self.props, self.layout.names_file, auth)))
            socks.append(socket.socket(fileno=self.fds["naming"]))
        rc = 1
        async with asyncio.TaskGroup() as tg:
            for server, sock in zip(servers, socks, strict=True):
                tg.create_task(server.serve(sockets=[sock]))
            try:
                rc = await self.supervise()
            finally:
                for server in servers:
                    server.should_exit = True
        if self.state != "stopping":
            self.set_state("stopping", self.detail)
        await asyncio.to_thread(self.terminate_leftovers)
        self.set_state("not running", self.detail)
        return rc


def make_admin_app(master: Master, auth: Any) -> Any:
    """The domain's admin API: ``GET /health``, ``GET /status``, ``POST /stop``, all behind basic auth."""
    from fastapi import Depends, FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI(title=f"kagemusha domain {master.props.name} admin", docs_url=None, redoc_url=None)

    @app.get("/health", dependencies=[Depends(auth)], response_model=None)
    async def health() -> Any:
        ok = master.state == "running" and await app_answers(master.props.probe_host, master.props.http_port)
        return JSONResponse({"state": master.state, "app": ok}, status_code=200 if ok else 503)

    @app.get("/status", dependencies=[Depends(auth)])
    async def status() -> dict[str, Any]:
        return master.status()

    @app.post("/stop", dependencies=[Depends(auth)], status_code=202)
    async def stop() -> dict[str, str]:
        master.request_stop()
        return {"state": "stopping"}

    return app


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    layout = DomainLayout(Path(args[0]))
    setup_logging(layout.logs, "domain.log")
    try:
        props = load_properties(layout.properties)
    except Exception as exc:  # noqa: BLE001 - logged, and the starter reports the state's detail
        log.error("cannot load %s: %s", layout.properties, exc)
        write_state(layout.state_file, "not running", detail=f"cannot load properties: {exc}")
        return 1
    master = Master(layout, props, parse_fds(os.environ.get(ENV_FDS, "")))
    try:
        return asyncio.run(master.run())
    except Exception as exc:
        log.exception("domain=%s master failed", props.name)
        with contextlib.suppress(Exception):
            master.terminate_leftovers()  # never leave an app server behind without its master
        write_state(layout.state_file, "not running", detail=f"domain master failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
