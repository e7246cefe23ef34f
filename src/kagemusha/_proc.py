"""Process façade: find and kill the processes kagemusha started, by the tags in their environment.

Every process started for a resource or monitor carries ``KAGEMUSHA_*``
variables (see ``ResourceContext.tag_env``). Children inherit them, including
daemons that detach with ``setsid`` and leave the process group, so scanning
``/proc/<pid>/environ`` finds every process of a group on a node. That is how
fencing kills "every process of the node's groups" without cgroups, and
without ever killing by name.

NB: a process that scrubs its environment (``env -i``) escapes the scan; the
watchdog parent (cgroup where available) is the protection for that case.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

__all__ = ["find_tagged", "kill_pids", "kill_tagged", "wait_gone"]


def find_tagged(match: dict[str, str], *, exclude_self: bool = True) -> list[psutil.Process]:
    """Return live processes whose environment contains every ``key=value`` of ``match``."""
    if not match or any(not v for v in match.values()):
        raise ValueError("refusing to match processes on an empty tag")
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if exclude_self and proc.pid == me:
            continue
        try:
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if all(env.get(k) == v for k, v in match.items()):
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            found.append(proc)
    return found


def kill_pids(procs: list[psutil.Process], *, sig: int = signal.SIGKILL, wait: float = 2.0) -> list[int]:
    """Send ``sig`` to each process and wait up to ``wait`` s for them to go; return the pids signalled."""
    pids = []
    for p in procs:
        try:
            p.send_signal(sig)
            pids.append(p.pid)
        except psutil.Error:
            continue
    if wait > 0 and procs:
        wait_gone(procs, wait)
    return pids


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def wait_gone(procs: list[psutil.Process], timeout: float) -> bool:
    """Wait until every process has exited (a zombie counts as exited: it runs nothing). True if all went."""
    deadline = time.monotonic() + timeout
    while True:
        if all(_gone(p) for p in procs):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def kill_tagged(match: dict[str, str], *, sig: int = signal.SIGKILL, wait: float = 2.0, rounds: int = 3) -> list[int]:
    """Kill every process tagged with ``match``; repeat so children forked meanwhile go too."""
    killed: list[int] = []
    for _ in range(rounds):
        procs = find_tagged(match)
        if not procs:
            break
        killed.extend(kill_pids(procs, sig=sig, wait=wait))
        time.sleep(0.01)
    return killed


def fence_tagged(match: dict[str, str], *, wait: float = 0.5) -> list[int]:
    """Kill every process tagged with ``match`` and return the pids still alive afterwards (proof: ``[]``).

    A process in uninterruptible sleep survives SIGKILL until its kernel call returns; the caller must
    not count such a fence as done (docs/fencing.md).
    """
    kill_tagged(match, sig=signal.SIGKILL, wait=wait)
    return [p.pid for p in find_tagged(match)]
