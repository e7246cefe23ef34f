"""The admin domain: the node's domain supervisor (WebOTX's ``admin`` domain and agent service).

``python -m kagemusha.domains._supervisor <registry dir> [--adminonly]``, started by
``kagemusha domain start admin`` on the inherited admin port socket. It starts every user
domain of the node's domains roots whose autostart is on (unless ``--adminonly``), records
which it started (``admin/state/started.json``) so ``stop admin`` stops those first with the
same flags (the seed's note 12), and serves a small API: ``GET /health``, ``GET /status``,
``POST /stop`` (HTTP basic against the admin hash in the registry).

Each user domain runs in its own session, so the supervisor crashing or being killed leaves
the domains running, and killing the admin domain never kills a user domain.

**Supervision.** Every user domain of the node that is meant to run (its last command was a
``start``: ``state/desired`` says ``running``; ``stop`` and ``kill`` say ``stopped`` before they
signal anything) and whose master has died is restarted, after a back-off
(``domain.restart.backoff`` seconds, doubled for each restart already in the window), at most
``domain.restart.limit`` times within ``domain.restart.window`` seconds (history in
``state/restarts.json``). Past the limit, what is left of it is killed and it is recorded
``failed``: ``list`` shows it, the cluster's domain monitor fails and the recovery chain takes
over. Each death and restart is logged with the master's exit status (known for the masters
this process started; a master started by a script is not our child: "unknown").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kagemusha.domains._control import (
    RESTARTS_FILE,
    DomainState,
    _stored_props,
    admin_started,
    domain_state,
    is_autostart,
    mark_failed,
    record_admin_started,
    restart_crashed,
    start_domain,
    stop_domain,
)
from kagemusha.domains._layout import DomainLayout, NodeRegistry, read_json, write_json_atomic
from kagemusha.domains._procs import master_alive, read_desired, read_record, reap, write_state
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
        self.exit_status: dict[int, str] = {}  # pid of a master we started -> how it ended
        # NB: the Popen objects of the masters we started are kept: a dropped Popen is reaped by
        # the subprocess module's own cleanup at the next spawn, and its exit status is lost.
        self.spawned: list[subprocess.Popen[bytes]] = []
        self.pending: dict[str, float] = {}  # domain dir -> monotonic time of its next restart

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
                start_domain(layout.name, root, registry=self.reg, _spawned=self.spawned)
            except KagemushaError as exc:
                log.error("domain=%s autostart failed: %s", layout.name, exc)
                failed.append(f"{layout.name}: {exc}")
                continue
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

    def reap(self) -> None:
        """Collect the masters we started that have exited (no zombies), keeping their exit status."""
        for proc in list(self.spawned):
            code = proc.poll()
            if code is None:
                continue
            self.spawned.remove(proc)
            self.exit_status[proc.pid] = (
                f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            )
            reap(proc.pid)

    def supervise_once(self) -> None:
        """One look at every domain meant to run: restart the crashed ones, within their limits."""
        self.reap()
        if self.state == "starting":
            return  # NB: autostart is starting the domains meant to run; a stale record is not a crash
        now = time.monotonic()
        for layout in self.reg.domains():
            key = str(layout.dir)
            if read_desired(layout) != "running":
                self.pending.pop(key, None)
                continue
            record = read_record(layout.state_file)
            if record.state in ("not running", "failed") and key not in self.pending:
                continue  # it ended on its own terms (a clean exit, a failed start, given up)
            if master_alive(record, layout.dir) is not None:
                continue
            if key not in self.pending:
                self.on_death(layout, record.pid, record.detail, now)
            elif now >= self.pending[key]:
                del self.pending[key]
                self.restart(layout)

    def _history(self, layout: DomainLayout, window: float) -> list[dict[str, Any]]:
        data = read_json(layout.state / RESTARTS_FILE)
        cutoff = time.time() - window
        return (
            [r for r in data if isinstance(r, dict) and r.get("at", 0) >= cutoff]
            if isinstance(data, list)
            else []
        )

    def on_death(self, layout: DomainLayout, pid: int | None, detail: str, now: float) -> None:
        props = _stored_props(layout)
        status = self.exit_status.pop(pid, None) if pid is not None else None
        status = status or "exit status unknown (not started by the admin domain)"
        history = self._history(layout, props.restart_window)
        if len(history) >= props.restart_limit:
            why = (
                f"master (pid {pid}) died: {status}; restart limit reached"
                f" ({props.restart_limit} in {props.restart_window:g} s)"
            )
            log.error("domain=%s failed: %s", layout.name, why)
            try:
                mark_failed(layout, why)
            except KagemushaError as exc:
                log.error("domain=%s could not be cleaned up: %s", layout.name, exc)
            return
        delay = min(60.0, props.restart_backoff * (2 ** len(history)))
        log.warning(
            "domain=%s master (pid %s) died: %s%s; restart %d of %d in %.1f s",
            layout.name, pid, status, f" ({detail})" if detail else "",
            len(history) + 1, props.restart_limit, delay,
        )  # fmt: skip
        self.pending[str(layout.dir)] = now + delay

    def restart(self, layout: DomainLayout) -> None:
        props = _stored_props(layout)
        history = self._history(layout, props.restart_window)
        history.append({"at": time.time()})

        def count() -> None:
            # NB: only a restart made (or tried and failed) counts: one found unnecessary (started by
            # someone else meanwhile, e.g. this admin domain's autostart after a failover) would use
            # up the budget, and a real crash after a few failovers would be "past the limit".
            write_json_atomic(layout.state / RESTARTS_FILE, history)

        try:
            restarted = restart_crashed(layout, spawned=self.spawned, before_start=count)
        except KagemushaError as exc:
            log.error("domain=%s restart %d failed: %s", layout.name, len(history), exc)
            return  # its state says why; the next look counts it as a death again
        if not restarted:
            log.info("domain=%s not restarted: stopped or started by someone else meanwhile", layout.name)
            return
        pid = read_record(layout.state_file).pid
        log.warning("domain=%s restarted (restart %d of %d), master pid %s", layout.name, len(history),
                    props.restart_limit, pid)  # fmt: skip

    async def watch(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.supervise_once)
            except Exception:  # the supervisor must outlive one bad look
                log.exception("domain supervision failed; retrying")
            await asyncio.sleep(0.2)

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
            reaper = tg.create_task(self.watch())
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
