"""``disk`` monitor: the switchover disk is mounted and answers I/O.

Usage in ``cluster.toml``::

    [[groups.monitors]]
    name = "sdw1"
    type = "disk"
    mount_point = "/data1"
    device = "/dev/sdb1"          # optional: also check it is this device, and read it
    file = "domains/.alive"       # optional: a file under the mount point that must be readable

A check (1) reads ``/proc/self/mountinfo``: the mount point must be mounted
(from ``device`` when given); (2) in a thread: ``stat`` and ``statvfs`` of the
mount point, a 4 KiB ``O_DIRECT`` read of the device (past the page cache, so
a dead disk shows) and a read of ``file``.

NB: I/O on a dead disk can hang in the kernel for minutes and a thread cannot
be cancelled. The caller's timeout ends the check (counted as failed); the
hung thread is left behind, and until it returns every further check fails
at once ("still hanging") instead of piling up more stuck threads. The thread
is our own (not the event loop's default executor), so a hung disk cannot
starve the agent's other work.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import threading
import time
from typing import ClassVar

from pydantic import Field, field_validator

from kagemusha import _os
from kagemusha.monitors._base import CheckResult, Monitor, MonitorContext
from kagemusha.resources._base import DriverParams

__all__ = ["DiskMonitor", "DiskMonitorParams"]


class DiskMonitorParams(DriverParams):
    mount_point: str = Field(min_length=2)
    device: str | None = None
    #: Read 4 KiB of ``device`` with O_DIRECT on every check (needs ``device``).
    read_device: bool = True
    #: A file that must be readable, absolute or relative to the mount point.
    file: str | None = None
    #: Expect a read-write mount (ext4 remounts read-only on errors: that counts as unhealthy).
    writable: bool = True

    @field_validator("mount_point")
    @classmethod
    def _mp(cls, v: str) -> str:
        if not v.startswith("/") or os.path.normpath(v) == "/":
            raise ValueError("must be an absolute path other than /")
        return os.path.normpath(v)

    @field_validator("device")
    @classmethod
    def _dev(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must be an absolute path, e.g. /dev/sdb1")
        return os.path.normpath(v) if v else v


def _direct_read(device: str) -> None:
    buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
    try:
        try:
            fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: no O_DIRECT here; fall back to a plain read
                raise
            fd = os.open(device, os.O_RDONLY)
        try:
            os.preadv(fd, [buf], 0)
        finally:
            os.close(fd)
    finally:
        buf.close()


def _resolve(fut: asyncio.Future[BaseException | None], err: BaseException | None) -> None:
    if not fut.done():  # cancelled by the caller's timeout
        fut.set_result(err)


class DiskMonitor(Monitor):
    type_name: ClassVar[str] = "disk"
    Params = DiskMonitorParams
    params: DiskMonitorParams

    def __init__(self, params: DriverParams, ctx: MonitorContext) -> None:
        super().__init__(params, ctx)
        self._busy_since: float | None = None  # set while an I/O thread runs
        self._busy_lock = threading.Lock()

    def _io(self) -> None:
        p = self.params
        os.stat(p.mount_point)
        os.statvfs(p.mount_point)
        if p.device and p.read_device:
            _direct_read(p.device)
        if p.file:
            path = p.file if p.file.startswith("/") else os.path.join(p.mount_point, p.file)
            with open(path, "rb") as f:
                f.read(4096)

    async def check(self) -> CheckResult:
        p = self.params
        try:
            entries = _os.read_mountinfo()
        except OSError as exc:
            return CheckResult(False, f"cannot read the mount table: {exc}")
        at = [e for e in entries if e.mount_point == p.mount_point]
        if not at:
            return CheckResult(False, f"{p.mount_point} is not mounted")
        if p.device:
            dev = _os.device_number(p.device)
            top = at[-1]
            if dev is None:
                return CheckResult(False, f"{p.device} is not a block device here")
            if (top.major, top.minor) != dev:
                return CheckResult(False, f"{p.mount_point} has {top.source} mounted, not {p.device}")
        if p.writable and "ro" in at[-1].options.split(","):
            return CheckResult(False, f"{p.mount_point} is mounted read-only (file system errors?)")

        with self._busy_lock:
            if self._busy_since is not None:
                return CheckResult(
                    False, f"I/O on {p.mount_point} still hanging for {time.monotonic() - self._busy_since:.0f} s"
                )
            self._busy_since = time.monotonic()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException | None] = loop.create_future()

        def work() -> None:
            err: BaseException | None = None
            try:
                self._io()
            except BaseException as exc:  # noqa: BLE001 - reported to the check
                err = exc
            finally:
                with self._busy_lock:
                    self._busy_since = None
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_resolve, done, err)

        threading.Thread(target=work, name=f"kagemusha-disk-monitor {p.mount_point}", daemon=True).start()
        err = await done
        if err is not None:
            return CheckResult(False, f"I/O on {p.mount_point} failed: {err}")
        return CheckResult(True, f"{p.mount_point} mounted and readable")
