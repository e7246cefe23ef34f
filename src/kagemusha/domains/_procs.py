"""The one façade through which domains touch processes and sockets.

A domain's processes are found two ways, and only these: the environment variable
``KAGEMUSHA_DOMAIN=<absolute domain directory>`` that every process of the domain inherits
(children that detach with ``setsid`` keep it), and the session the domain was started in
(its master is a session leader), limited to processes younger than the master. A process
that matches neither is never signalled: nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kagemusha.domains._layout import read_desired, read_json, write_desired, write_state
from kagemusha.errors import DomainError

if TYPE_CHECKING:
    import psutil
else:

    class _Psutil:
        """``psutil``, imported on first use.

        NB: importing psutil costs ~10 ms of CPU (tens on a loaded machine), and a ``domain
        start`` after a clean stop never needs it (``master_alive`` rules out a recorded pid that
        no longer exists with ``kill(pid, 0)``), nor does ``domain list`` of stopped domains
        (issue 12). Every use goes through the ``import`` statement, which is thread-safe.
        """

        def __getattr__(self, name: str) -> Any:
            import psutil as module

            return getattr(module, name)

    psutil = _Psutil()

__all__ = [
    "ENV_TAG",
    "ProcessRecord",
    "bind_listener",
    "domain_processes",
    "kill_all",
    "read_desired",
    "read_record",
    "write_desired",
    "write_state",
]

ENV_TAG = "KAGEMUSHA_DOMAIN"
ENV_START_FD = "KAGEMUSHA_START_FD"  # the master writes "running" there once the app serves


@dataclass(frozen=True)
class ProcessRecord:
    """What ``state/state.json`` says about a domain's master process."""

    state: str
    pid: int | None
    create_time: float | None
    detail: str = ""

    @property
    def session(self) -> int | None:
        return self.pid


def read_record(state_file: Path) -> ProcessRecord:
    data = read_json(state_file)
    if not isinstance(data, dict):
        return ProcessRecord("not running", None, None)
    pid = data.get("pid")
    ct = data.get("create_time")
    return ProcessRecord(
        state=str(data.get("state", "not running")),
        pid=pid if isinstance(pid, int) else None,
        create_time=float(ct) if isinstance(ct, (int, float)) else None,
        detail=str(data.get("detail", "")),
    )


def _is_gone(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child (an agent that started a domain in-process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def master_alive(record: ProcessRecord, domain_dir: Path) -> psutil.Process | None:
    """The domain's master if it is alive and provably the one recorded (pid, creation time, tag)."""
    if record.pid is None:
        return None
    try:
        os.kill(record.pid, 0)  # NB: no such process at all: gone (a zombie still answers; psutil decides)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists (another user's): psutil decides
    # NB: no reaping here: a zombie counts as gone already, and the admin domain, whose children
    # the masters it started are, must get their exit status (``Supervisor.reap``) first.
    try:
        proc = psutil.Process(record.pid)
        if _is_gone(proc):
            return None
        if record.create_time is not None and abs(proc.create_time() - record.create_time) > 1.0:
            return None  # NB: the pid was reused by an unrelated process
        try:
            if proc.environ().get(ENV_TAG) != str(domain_dir):
                return None
        except psutil.AccessDenied:
            pass  # cannot read it: the pid + creation time still prove it
        if not _Place().ours(proc.pid, str(domain_dir)):
            return None  # another node's domain on the same path (simulated nodes on one host)
        return proc
    except psutil.Error:
        return None


def _session_is_ours(session: int, since: float | None) -> bool:
    """Whether session id ``session`` can still only be the domain's.

    NB: Linux does not reuse a pid while it names a live session, so a session id whose leader
    is gone can only be held by the domain's leftovers. If a process with that pid lives and was
    not created when the master was, the pid was reused: the session is someone else's.
    """
    try:
        leader = psutil.Process(session)
    except psutil.NoSuchProcess:
        return since is not None
    except psutil.Error:
        return False
    try:
        return since is not None and abs(leader.create_time() - since) <= 1.0
    except psutil.Error:
        return False


def _mount_ns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


class _Place:
    """Whether a tagged process runs from *our* domain directory, seen from its mount namespace.

    NB: the tag is a path, and a path means a directory only within one mount namespace.
    Nodes simulated on one host (the netns harness) share the pid namespace but not the mount
    namespace: another node's domain on the same path is not ours. A process in our mount
    namespace is ours by its tag alone (even with the directory gone: fencing after the disk
    was unmounted). In another mount namespace it is ours only if the tagged path there is the
    very directory we see (same device and inode, through ``/proc/<pid>/root``).
    """

    def __init__(self) -> None:
        self.mine = _mount_ns("self")
        self.stats: dict[str, tuple[int, int] | None] = {}

    def _stat(self, path: str) -> tuple[int, int] | None:
        if path not in self.stats:
            try:
                st = os.stat(path)
                self.stats[path] = (st.st_dev, st.st_ino)
            except OSError:
                self.stats[path] = None
        return self.stats[path]

    def ours(self, pid: int, tag: str) -> bool:
        ns = _mount_ns(pid)
        if ns is None or ns == self.mine:
            return True
        here = self._stat(tag)
        if here is None:
            return False
        try:
            st = os.stat(f"/proc/{pid}/root{tag}")
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == here


def processes_tagged_under(root: Path) -> list[psutil.Process]:
    """Every live process whose domain tag is a directory under ``root`` (e.g. a disk's mount point)."""
    prefix = str(root).rstrip("/") + "/"
    me = os.getpid()
    place = _Place()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["pid"] == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error):
            tag = proc.environ().get(ENV_TAG, "")
            if tag.startswith(prefix) and place.ours(proc.info["pid"], tag):
                found.append(proc)
    return found


def kill_procs(procs: list[psutil.Process]) -> list[int]:
    """Freeze, then SIGKILL ``procs`` at once; wait until they are gone. Returns the pids signalled."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.suspend()
    killed: list[int] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
            killed.append(proc.pid)
    wait_gone(procs, timeout=2.0)
    return killed


def domain_processes(domain_dir: Path, record: ProcessRecord | None = None) -> list[psutil.Process]:
    """Every live process that provably belongs to the domain in ``domain_dir``.

    Args:
        domain_dir: the domain's absolute directory (the value of its ``KAGEMUSHA_DOMAIN`` tag).
        record: the master's record; its session adds untagged processes (a child that cleared
            its environment) started after the master.

    Returns:
        The processes, this process and its ancestors excluded.
    """
    tag = str(domain_dir)
    me = os.getpid()
    excluded = {me}
    with contextlib.suppress(psutil.Error):
        excluded.update(p.pid for p in psutil.Process(me).parents())
    session = record.session if record is not None else None
    since = record.create_time if record is not None else None
    if session is not None and not _session_is_ours(session, since):
        session = None
    place = _Place()
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "create_time", "status"]):
        pid = proc.info["pid"]
        if pid in excluded or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        belongs = False
        try:
            belongs = proc.environ().get(ENV_TAG) == tag and place.ours(pid, tag)
        except psutil.Error:
            pass
        if not belongs and session is not None and since is not None:
            try:
                # NB: the session is proved ours again at the match, not only before the scan: a session
                # whose last process died frees its id, and a newcomer that got that pid and called setsid
                # (a script's `setsid sleep 300`) had the same session id and a later create_time, so it was
                # killed with the domain's leftovers.
                belongs = (os.getsid(pid) == session and proc.info["create_time"] >= since - 0.5
                           and _session_is_ours(session, since))
            except OSError:
                pass
        if belongs:
            found.append(proc)
    return found


def kill_all(domain_dir: Path, record: ProcessRecord | None = None, *, rounds: int = 5) -> list[int]:
    """SIGKILL every process of the domain at once, rescanning for ones forked meanwhile.

    Returns:
        The pids killed.

    Raises:
        DomainError: some process of the domain survived (e.g. owned by another user and we
            are not root).
    """
    killed: list[int] = []
    for _ in range(rounds):
        procs = domain_processes(domain_dir, record)
        if not procs:
            return killed
        # Freeze first so nothing forks between the scan and the kill.
        killed.extend(kill_procs(procs))
    left = domain_processes(domain_dir, record)
    if left:
        raise DomainError(f"could not kill processes {[p.pid for p in left]} of {domain_dir}")
    return killed


def wait_gone(procs: Iterable[psutil.Process], *, timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts as exited); return those still alive.

    NB: psutil.wait_procs waits for zombies to be reaped, which an init that does not reap
    (some containers) never does; a zombie runs no code and holds no port, so it is gone for us.
    """
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            reap(proc.pid)
        alive = [p for p in procs if not _is_gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def wait_exit(pid: int, timeout: float) -> None:
    """Return when process ``pid`` exits or after ``timeout`` seconds, whichever is first.

    A pidfd (Linux 5.3+) wakes us at the exit itself, so a stop returns at once rather than on
    the next tick of a poll; without one, a short sleep.
    """
    import select

    try:
        fd = os.pidfd_open(pid)
    except OSError:
        time.sleep(min(timeout, 0.02))
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def signal_procs(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def bind_listener(port: int, key: str, *, host: str = "0.0.0.0", backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` that a child process can inherit.

    The starter binds every port (as root when the domain's user cannot bind below 1024) and
    hands the descriptors to the domain: that is how a non-root domain serves port 80, and how
    every service of a domain listens on its bind address (the VIP) and nowhere else.

    Raises:
        DomainError: the port is in use, may not be bound, or ``host`` is not an address of
            this node; the message names key, address and port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    where = f"{host}:{port}" if family == socket.AF_INET else f"[{host}]:{port}"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host != "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DomainError(f"port {port} ({key}) is already in use on this node ({where})") from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise DomainError(
                f"cannot listen on {where} ({key}): {host} is not an address of this node"
                " (is the floating IP up?)"
            ) from exc
        if exc.errno == errno.EACCES:
            raise DomainError(
                f"port {port} ({key}): permission denied; ports below 1024 need the domain started as root"
                " (it then runs as domain.run.user)"
            ) from exc
        raise DomainError(f"cannot listen on {where} ({key}): {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def send_signal(pid: int, sig: signal.Signals) -> bool:
    """Signal the domain's master; False when it is gone already.

    Raises:
        DomainError: we may not signal it (the domain runs as another user and we are not root).
    """
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise DomainError(
            f"not allowed to signal process {pid} of the domain: run as root or as the domain's user"
        ) from exc
