"""Time, injected: the agent, its lease keeper, monitors and stores read time only through a ``Clock``.

Why: the failover logic must run on a virtual clock in the deterministic simulation
(``kagemusha.testing.simulate``), where an hour of lease renewals takes milliseconds. asyncio's own
timers (``asyncio.sleep``, ``asyncio.timeout``, ``wait_for``) run on ``loop.time()``, so a clock
whose ``monotonic()`` *is* ``loop.time()`` stays consistent with them on a real loop and on the
simulation's virtual-time loop alike.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "LoopClock", "SystemClock"]


class Clock(Protocol):
    """What the agent may know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (lease deadlines, durations)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (records in the store, fail-count expiry)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""


class SystemClock:
    """The machine's clocks. ``monotonic()`` is ``time.monotonic()``, which asyncio's loop uses too."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class LoopClock:
    """The running loop's clock: ``monotonic()`` is ``loop.time()``, wall time is ``epoch + loop.time()``.

    On the simulation's virtual-time loop this is the virtual clock; ``hold`` is awaited before every
    sleep returns, so a test can freeze one agent (an ``agent-hang``) while the others go on.
    """

    def __init__(self, epoch: float = 1_700_000_000.0) -> None:
        self.epoch = epoch
        self.hold: asyncio.Event | None = None

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def time(self) -> float:
        return self.epoch + asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.hold is not None:
            await self.hold.wait()
