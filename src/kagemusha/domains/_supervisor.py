"""The admin domain: the node's domain supervisor (WebOTX's ``admin`` domain and agent service).

``python -m kagemusha.domains._supervisor <registry dir> [--adminonly]``, started by
``kagemusha domain start admin`` on the inherited admin port socket. It starts every user
domain of the node's domains roots whose autostart is on (unless ``--adminonly``), records
which it started (``admin/state/started.json``) so ``stop admin`` stops those first with the
same flags (the seed's note 12), and serves a small API: ``GET /health``, ``GET /status``,
``POST /stop`` (HTTP basic against the admin hash in the registry).

Each user domain runs in its own session, so the supervisor crashing or being killed leaves
the domains running, and killing the admin domain never kills a user domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kagemusha.domains._control import (
    DomainState,
    admin_started,
    domain_state,
    is_autostart,
    record_admin_started,
    start_domain,
    stop_domain,
)
from kagemusha.domains._layout import NodeRegistry
from kagemusha.domains._procs import read_record, reap, write_state
from kagemusha.domains._runtime import parse_fds, quiet_server, setup_logging
from kagemusha.errors import KagemushaError

__all__ = ["main"]

log = logging.getLogger("kagemusha.admin")


class Supervisor:
    """The running admin domain."""

    def __init__(self, reg: NodeRegistry, *, adminonly: bool, fd: int) -> None:
        self.reg = reg
        self.adminonly = adminonly
        self.fd = fd
        self.state = "starting"
        self.started_at = time.time()
        self.stop_requested = asyncio.Event()
        self.children: set[int] = set()

    def set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        pid = os.getpid()  # kept with "not running" too: the master is alive until it has exited
        write_state(self.reg.admin_layout.state_file, state, pid=pid, detail=detail)
        log.info("domain=admin state=%s%s", state, f" detail={detail!r}" if detail else "")

    def status(self) -> dict[str, Any]:
        domains = []
        for layout in self.reg.domains():
            with contextlib.suppress(KagemushaError):
                domains.append(
                    {
                        "name": layout.name,
                        "dir": str(layout.dir),
                        "state": str(domain_state(layout.name, layout.dir.parent, registry=self.reg)),
                        "autostart": is_autostart(layout),
                    }
                )
        return {"name": "admin", "state": self.state, "pid": os.getpid(), "domains": domains}

    def autostart(self) -> list[str]:
        """Start the autostart domains; returns one ``name: reason`` per domain that failed."""
        failed: list[str] = []
        started = admin_started(self.reg)
        for layout in self.reg.domains():
            if not is_autostart(layout):
                log.info("domain=%s autostart off: not started", layout.name)
                continue
            root = str(layout.dir.parent)
            try:
                if domain_state(layout.name, root, registry=self.reg) is not DomainState.NOT_RUNNING:
                    log.info("domain=%s already running: not started by the admin domain", layout.name)
                    continue
                start_domain(layout.name, root, registry=self.reg)
            except KagemushaError as exc:
                log.error("domain=%s autostart failed: %s", layout.name, exc)
                failed.append(f"{layout.name}: {exc}")
                continue
            pid = read_record(layout.state_file).pid
            if pid is not None:
                self.children.add(pid)
            if (layout.name, root) not in started:
                started.append((layout.name, root))
            record_admin_started(self.reg, started)
            log.info("domain=%s started by the admin domain", layout.name)
        return failed

    def stop_started(self) -> None:
        for name, root in admin_started(self.reg):
            try:
                stop_domain(name, root, registry=self.reg)
            except KagemushaError as exc:
                log.error("domain=%s stop failed: %s", name, exc)
        record_admin_started(self.reg, [])

    async def reap_children(self) -> None:
        # The masters we started are our children: collect them when they exit (no zombies).
        while True:
            for pid in list(self.children):
                with contextlib.suppress(ChildProcessError):
                    done, _ = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
                    if done == 0:
                        continue
                self.children.discard(pid)
                reap(pid)
            await asyncio.sleep(1.0)

    async def run(self) -> int:
        from fastapi import Depends, FastAPI

        from kagemusha.domains._auth import basic_auth_dependency

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop_requested.set)
        self.set_state("starting")
        admin = self.reg.admin_settings()
        auth = basic_auth_dependency(
            str(admin.get("user", "admin")), lambda: self.reg.admin_settings().get("password_hash")
        )
        app = FastAPI(title="kagemusha admin domain", docs_url=None, redoc_url=None)

        @app.get("/health", dependencies=[Depends(auth)])
        async def health() -> dict[str, str]:
            return {"state": self.state}

        @app.get("/status", dependencies=[Depends(auth)])
        async def status() -> dict[str, Any]:
            return await asyncio.to_thread(self.status)

        @app.post("/stop", dependencies=[Depends(auth)], status_code=202)
        async def stop() -> dict[str, str]:
            self.stop_requested.set()
            return {"state": "stopping"}

        server = quiet_server(app)
        sock = socket.socket(fileno=self.fd)
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(server.serve(sockets=[sock]))
            reaper = tg.create_task(self.reap_children())
            try:
                failed = await asyncio.to_thread(self.autostart) if not self.adminonly else []
                self.set_state("running", f"autostart failed: {'; '.join(failed)}" if failed else "")
                await self.stop_requested.wait()
                self.set_state("stopping")
                await asyncio.to_thread(self.stop_started)
            finally:
                server.should_exit = True
                reaper.cancel()
            await serving
        self.set_state("not running")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    reg = NodeRegistry(Path(args[0]))
    adminonly = "--adminonly" in args[1:]
    setup_logging(reg.admin_layout.logs, "admin.log")
    fds = parse_fds(os.environ.get("KAGEMUSHA_DOMAIN_FDS", ""))
    sup = Supervisor(reg, adminonly=adminonly, fd=fds["admin"])
    try:
        return asyncio.run(sup.run())
    except Exception as exc:
        log.exception("admin domain failed")
        write_state(reg.admin_layout.state_file, "not running", detail=f"admin domain failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
