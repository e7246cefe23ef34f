"""The Linux kernel watchdog (``/dev/watchdog``), as Patroni uses it.

The agent arms the device before it starts anything, and feeds it only while
that is safe: a ping at ``now`` lets the machine live until ``now + timeout``,
so it is sent only when that is no later than the lease may expire at the store,
and not once a fence stops making progress. If the agent hangs (a blocked event
loop, a stuck kernel call) or a fence cannot be proven, the pings stop and the
kernel resets the machine before the lease can expire and another node starts
the groups. When the node runs nothing it disarms the device with the magic
close ("V"), so an idle node (and one that fenced cleanly) is never reset.
The exact timing is in docs/fencing.md.

A path that is not a character device (a FIFO or a file) is a stand-in for
tests: it receives the same bytes (``\0`` per ping, ``V`` on disarm) and no
ioctl. On a real device, failing to set the timeout is an error: the agent
then starts nothing.

NB: the watchdog's granularity is whole seconds, so the config check requires
``heartbeat_timeout - store_timeout - fence_margin >= 1`` when a
watchdog is configured (``config/_load.py``).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import stat
import struct

__all__ = ["Watchdog", "watchdog_timeout"]

log = logging.getLogger("kagemusha.watchdog")

# <linux/watchdog.h>: _IOWR('W', 6, int)
WDIOC_SETTIMEOUT = 0xC0045706


def watchdog_timeout(heartbeat_timeout: float, store_timeout: float, fence_margin: float) -> int:
    """Whole seconds the device may go without a ping.

    A ping sent with a renewal's answer (at most ``store_timeout`` after the send) must let the device
    fire ``fence_margin`` before the lease can expire at the store: ``floor(T - S - M)``.
    """
    return math.floor(heartbeat_timeout - store_timeout - fence_margin + 1e-9)


class Watchdog:
    """A kernel watchdog device, armed while groups run here."""

    def __init__(self, path: str, timeout: int) -> None:
        self.path = path
        self.timeout = timeout
        self.fd: int | None = None
        self.pings = 0

    @property
    def armed(self) -> bool:
        return self.fd is not None

    def arm(self) -> None:
        """Open the device and set its timeout.

        Raises:
            OSError: the device cannot be opened, or (a real device) refuses the timeout.
        """
        if self.fd is not None:
            return
        fd = os.open(self.path, os.O_WRONLY)
        if stat.S_ISCHR(os.fstat(fd).st_mode):
            try:
                fcntl.ioctl(fd, WDIOC_SETTIMEOUT, struct.pack("i", self.timeout))
            except OSError as exc:
                # NB: a device that keeps its own (longer) timeout would reset the machine after the
                # lease expired: not a watchdog we can trust. Magic close, then refuse.
                try:
                    os.write(fd, b"V")
                finally:
                    os.close(fd)
                raise OSError(exc.errno, f"cannot set the watchdog timeout to {self.timeout}s: {exc.strerror}") from exc
        self.fd = fd
        log.info("watchdog armed", extra={"kv": {"device": self.path, "timeout": self.timeout}})

    def ping(self) -> None:
        if self.fd is None:
            self.arm()
        assert self.fd is not None
        os.write(self.fd, b"\0")
        self.pings += 1

    def disarm(self) -> None:
        """Magic close: the device stops counting (drivers without nowayout)."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, b"V")
        finally:
            os.close(self.fd)
            self.fd = None
        log.info("watchdog disarmed", extra={"kv": {"device": self.path}})
