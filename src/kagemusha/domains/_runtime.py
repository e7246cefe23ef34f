"""The domain master: one process per running domain, leader of the domain's session.

``python -m kagemusha.domains._runtime <domain dir>``, started by :func:`start_domain` with the
listening sockets inherited (``KAGEMUSHA_DOMAIN_FDS=http:5,https:6,admin:7,naming:8``). It

- starts the application server (``_appserver``, uvicorn) on the http and https sockets first
  thing, before it imports anything else, so the app's boot overlaps the master's own;
- serves the admin API (health, status, graceful stop; HTTP basic against the argon2 hash)
  and the naming service, both plain ASGI on the small server of ``_httpd`` (neither FastAPI
  nor uvicorn here: their imports would cost every start hundreds of milliseconds);
- records its state in ``state/state.json``: ``starting`` until the app serves, ``running``,
  ``stopping``, then ``not running``.

Readiness is signalled, never polled: the app server writes ``ready`` to a pipe once every
listener serves; the master then writes ``running`` to the pipe its starter gave it
(``KAGEMUSHA_START_FD``). The app server's exit is seen through a pidfd in the event loop.

Signals: SIGTERM/SIGINT = graceful stop (SIGTERM to the app server, wait for it as long as it
takes); SIGUSR1 = abandon a stop that took too long (``stop`` without ``--force`` timed out: the
domain keeps running). When the app server has exited, leftovers of the domain (children that
detached) are terminated before the master exits, so a stopped domain leaves nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from kagemusha.domains._layout import DomainLayout
    from kagemusha.domains._properties import DomainProperties

__all__ = ["main", "parse_fds", "quiet_server", "setup_logging"]

ENV_FDS = "KAGEMUSHA_DOMAIN_FDS"
ENV_START_FD = "KAGEMUSHA_START_FD"
ENV_APP_WORKERS = "KAGEMUSHA_APP_WORKERS"
ENV_APP_ACCESS_LOG = "KAGEMUSHA_APP_ACCESS_LOG"
ENV_PROPS = "KAGEMUSHA_DOMAIN_PROPS"  # the properties as read by the starter (JSON): no re-parse here
APP_LISTENERS = ("http", "https")


def setup_logging(logs: Path, filename: str) -> None:
    """Log to a rotated file in ``logs/``."""
    import logging
    import logging.handlers

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
    """A uvicorn server for ``app`` that leaves signal handling to its owner and exits at once.

    NB: uvicorn's own loop looks at ``should_exit`` every 0.1 s and sleeps 0.1 s more in its
    shutdown; for the domain's small APIs (no lifespan, short requests) an event does.
    """
    import uvicorn

    from kagemusha._uvicorn import EventServer

    class _Server(EventServer):
        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            for server in self.servers:
                server.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False)
    return _Server(config)


def _start_app_server(domain_dir: Path, fds: dict[str, int]) -> tuple[subprocess.Popen[bytes], int]:
    """Spawn the application server on the app listeners; returns it and the read end of its ready pipe."""
    ready_r, ready_w = os.pipe()
    app_fds = {k: v for k, v in fds.items() if k in APP_LISTENERS}
    env = dict(os.environ)
    env["KAGEMUSHA_APP_FDS"] = ",".join(f"{k}:{v}" for k, v in app_fds.items())
    env["KAGEMUSHA_READY_FD"] = str(ready_w)
    for name in (ENV_FDS, ENV_START_FD, ENV_APP_WORKERS, ENV_APP_ACCESS_LOG, ENV_PROPS):
        env.pop(name, None)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kagemusha.domains._appserver",
            str(domain_dir),
            os.environ.get(ENV_APP_WORKERS, "1"),
            os.environ.get(ENV_APP_ACCESS_LOG, "true"),
        ],
        pass_fds=[*app_fds.values(), ready_w],
        env=env,
        cwd=str(domain_dir),
        stdin=subprocess.DEVNULL,
    )
    os.close(ready_w)
    for fd in app_fds.values():
        os.close(fd)
    return child, ready_r


class Master:
    """The running domain."""

    def __init__(
        self,
        layout: DomainLayout,
        props: DomainProperties,
        fds: dict[str, int],
        child: subprocess.Popen[bytes],
        app_ready_fd: int,
    ) -> None:
        import asyncio
        import time

        self.layout = layout
        self.props = props
        self.fds = fds
        self.child = child
        self.app_ready_fd = app_ready_fd
        self.state = "starting"
        self.started_at = time.time()
        self.stop_requested = asyncio.Event()
        self.abort_requested = False
        self.wakeup = asyncio.Event()
        self.app_ready = asyncio.Event()
        self.child_exited = asyncio.Event()
        self.detail = ""

    # -- state -------------------------------------------------------------------------------

    def set_state(self, state: str, detail: str = "") -> None:
        from kagemusha.domains._layout import write_state

        self.state = state
        self.detail = detail
        extra: dict[str, Any] = {}
        if state != "not running":
            extra["app_pid"] = self.child.pid
        # NB: the pid stays with "not running" too: the master is alive until it has exited.
        write_state(self.layout.state_file, state, pid=os.getpid(), detail=detail, **extra)
        log().info("domain=%s state=%s%s", self.props.name, state, f" detail={detail!r}" if detail else "")

    def status(self) -> dict[str, Any]:
        import time

        return {
            "name": self.props.name,
            "state": self.state,
            "pid": os.getpid(),
            "app_pid": self.child.pid,
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

    def watch_child(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the loop when the app server writes ``ready`` and when it exits (no polling)."""

        def on_ready() -> None:
            try:
                data = os.read(self.app_ready_fd, 64)
            except OSError:
                data = b""
            if b"ready" in data:
                self.app_ready.set()
            loop.remove_reader(self.app_ready_fd)
            os.close(self.app_ready_fd)
            self.wakeup.set()

        loop.add_reader(self.app_ready_fd, on_ready)
        pidfd = os.pidfd_open(self.child.pid)

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self.child.wait()
            self.child_exited.set()
            self.wakeup.set()

        loop.add_reader(pidfd, on_exit)

    def terminate_leftovers(self, grace: float = 2.0) -> None:
        """Terminate what is left of the domain (detached children) once the app server is gone."""
        import signal

        from kagemusha.domains._layout import may_have_processes

        # NB: the master leads the session: anything else in it (or tagged) is a leftover.
        if not may_have_processes(self.layout.dir, os.getsid(0), exclude=frozenset({os.getpid()})):
            return
        from kagemusha.domains._procs import domain_processes, read_record, signal_procs, wait_gone

        record = read_record(self.layout.state_file)
        left = domain_processes(self.layout.dir, record)
        if not left:
            return
        log().warning("domain=%s terminating leftover processes %s", self.props.name, [p.pid for p in left])
        signal_procs(left, signal.SIGTERM)
        alive = wait_gone(left, timeout=grace)
        signal_procs(alive, signal.SIGKILL)
        wait_gone(alive, timeout=grace)

    def tell_starter(self, line: str) -> None:
        """Write the readiness line to the starter's pipe (once), then close it."""
        fd = os.environ.pop(ENV_START_FD, None)
        if fd is None:
            return
        try:
            os.write(int(fd), line.encode() + b"\n")
        except OSError:
            pass  # the starter gave up waiting
        finally:
            try:
                os.close(int(fd))
            except OSError:
                pass

    async def supervise(self, servers_up: asyncio.Future[Any]) -> int:
        import signal

        stopping = False
        while True:
            self.wakeup.clear()
            if self.child_exited.is_set():
                rc = self.child.returncode
                if stopping:
                    log().info("domain=%s app server stopped (rc=%s)", self.props.name, rc)
                    return 0
                what = "during start" if self.state == "starting" else "unexpectedly"
                self.detail = f"application server exited {what} with code {rc}"
                log().error("domain=%s %s", self.props.name, self.detail)
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
            elif self.state == "starting" and self.app_ready.is_set() and servers_up.done():
                self.set_state("running")
                self.tell_starter("running")
                continue
            await self.wakeup.wait()

    async def run(self) -> int:
        import asyncio
        import signal
        import socket

        from kagemusha.domains._auth import Authenticator
        from kagemusha.domains._httpd import serve
        from kagemusha.domains._naming import make_naming_app

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR1, self.abort_stop)
        self.watch_child(loop)
        self.set_state("starting")
        auth = Authenticator(self.props.admin_user, self.layout.read_hash)
        apps = [(make_admin_app(self, auth), self.fds["admin"])]
        if "naming" in self.fds:
            apps.append((make_naming_app(self.props, self.layout.names_file, auth), self.fds["naming"]))
        stop_serving = asyncio.Event()
        rc = 1
        async with asyncio.TaskGroup() as tg:
            for app, fd in apps:
                tg.create_task(serve(app, socket.socket(fileno=fd), stop=stop_serving))
            await asyncio.sleep(0)  # NB: one loop turn and every listener accepts (start_server)
            up: asyncio.Future[None] = loop.create_future()
            up.set_result(None)
            try:
                rc = await self.supervise(up)
            finally:
                stop_serving.set()
        self.tell_starter("failed")
        if self.state != "stopping":
            self.set_state("stopping", self.detail)
        await asyncio.to_thread(self.terminate_leftovers)
        self.set_state("not running", self.detail)
        return rc


def make_admin_app(master: Master, auth: Any) -> Any:
    """The domain's admin API: ``GET /health``, ``GET /status``, ``POST /stop``, all behind basic auth."""
    from kagemusha.domains._asgi import Receive, Scope, Send, authorize, send_json

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        import asyncio

        if scope["type"] != "http":
            return
        if not await authorize(auth, scope, send):
            return
        route = (scope["method"], scope["path"])
        if route == ("GET", "/health"):
            from kagemusha.domains._control import _app_answers

            ok = master.state == "running" and await asyncio.to_thread(_app_answers, master.props)
            await send_json(send, 200 if ok else 503, {"state": master.state, "app": ok})
        elif route == ("GET", "/status"):
            await send_json(send, 200, master.status())
        elif route == ("POST", "/stop"):
            master.request_stop()
            await send_json(send, 202, {"state": "stopping"})
        elif scope["path"] in ("/health", "/status", "/stop"):
            await send_json(send, 405, {"detail": "method not allowed"})
        else:
            await send_json(send, 404, {"detail": "not found"})

    return app


def log() -> Any:
    import logging

    return logging.getLogger("kagemusha.domain")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    domain_dir = Path(args[0])
    fds = parse_fds(os.environ.get(ENV_FDS, ""))
    # NB: first thing, before any import: the app server's boot is the longest part of a start.
    child, app_ready = _start_app_server(domain_dir, fds)

    import asyncio
    import contextlib

    from kagemusha.domains._layout import DomainLayout, write_state
    from kagemusha.domains._properties import load_properties, parse_properties

    layout = DomainLayout(domain_dir)
    setup_logging(layout.logs, "domain.log")
    log().info("domain=%s app server pid=%d", layout.name, child.pid)
    try:
        given = os.environ.pop(ENV_PROPS, None)
        if given is not None:
            import json

            props = parse_properties(json.loads(given), source=str(layout.properties), name=layout.name)
        else:
            props = load_properties(layout.properties)
    except Exception as exc:  # noqa: BLE001 - logged, and the starter reports the state's detail
        log().error("cannot load %s: %s", layout.properties, exc)
        child.kill()
        child.wait()
        write_state(layout.state_file, "not running", detail=f"cannot load properties: {exc}")
        return 1
    master = Master(layout, props, fds, child, app_ready)
    try:
        return asyncio.run(master.run())
    except Exception as exc:  # noqa: BLE001 - recorded as the state's detail, the starter reports it
        log().exception("domain=%s master failed", props.name)
        with contextlib.suppress(Exception):
            child.kill()
            master.terminate_leftovers()  # never leave an app server behind without its master
        write_state(layout.state_file, "not running", detail=f"domain master failed: {exc}")
        return 1


if __name__ == "__main__":
    from kagemusha.domains._appserver import exit_now

    exit_now(main())  # NB: no interpreter teardown on the stop path (see exit_now)
