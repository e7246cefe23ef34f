"""The Linux kernel watchdog (``/dev/watchdog``), as Patroni uses it.

While the node runs groups the agent pings the device after every lease
renewal; if the agent hangs (a blocked event loop, a stuck kernel call) the
pings stop and the kernel resets the machine before the lease can expire and
another node starts the groups. When the node runs nothing it disarms the
device with the magic close ("V"), so an idle node is never reset.

NB: the watchdog's granularity is whole seconds, so the config check requires
``heartbeat_timeout - heartbeat_interval - store_timeout >= 1`` when a
watchdog is configured (``config/_load.py``).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import struct

__all__ = ["Watchdog", "watchdog_timeout"]

log = logging.getLogger("kagemusha.watchdog")

# <linux/watchdog.h>: _IOWR('W', 6, int)
WDIOC_SETTIMEOUT = 0xC0045706


def watchdog_timeout(heartbeat_timeout: float, heartbeat_interval: float, store_timeout: float) -> int:
    """Whole seconds the device may go without a ping: it must fire before the lease TTL runs out."""
    return math.floor(heartbeat_timeout - heartbeat_interval - store_timeout)


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
        if self.fd is not None:
            return
        self.fd = os.open(self.path, os.O_WRONLY)
        try:
            fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", self.timeout))
        except OSError as exc:  # not a watchdog device (tests) or a fixed-timeout driver
            log.warning("cannot set watchdog timeout", extra={"kv": {"device": self.path, "error": exc.strerror}})
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
