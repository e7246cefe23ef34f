"""The timing rule, on virtual time: for the worst store delay the rule allows, the fence starts with
``fence_margin`` to spare before the lease can expire at the store (issue 10).

A real agent on the virtual-time loop, a store whose answers are delayed (the renewal lands at the store
at once, the answer comes just before ``store_timeout``), then a store that stops answering or refuses.
The config sits exactly at the rule's bound (``timing_need``), so any slack the rule forgot shows up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kagemusha._clock import LoopClock
from kagemusha.agent import Agent
from kagemusha.cluster import LocalState
from kagemusha.config import parse_config
from kagemusha.config._load import timing_need
from kagemusha.errors import StoreUnavailable
from kagemusha.testing import MemoryBackend, MemoryStore
from kagemusha.testing._vloop import VirtualTimeLoop
from tests.agent.test_safety_holes import Steer, standin  # noqa: F401 - the stand-in driver fixture

I, S, M = 0.2, 0.3, 0.2


class SlowStore(MemoryStore):
    """Renewals land at once; answers come ``delay`` later; after ``good`` renewals it hangs or refuses."""

    def __init__(self, backend: MemoryBackend, *, delay: float, good: int, then: str) -> None:
        super().__init__(backend)
        self.delay, self.good, self.then = delay, good, then
        self.renewals = 0
        self.last_landed = 0.0

    async def keepalive(self, lease_id: int) -> float:
        if self.renewals >= self.good:
            if self.then == "refuse":
                raise StoreUnavailable("refused")
            await asyncio.Event().wait()  # never answers: the caller's store_timeout ends it
        ttl = await super().keepalive(lease_id)  # the store's TTL restarts now, at the send
        self.renewals += 1
        self.last_landed = asyncio.get_running_loop().time()
        await asyncio.sleep(self.delay)
        return ttl


@pytest.mark.parametrize("then", ["hang", "refuse"])
@pytest.mark.parametrize("delay", [0.0, S / 2, S - 1e-3])
def test_fence_starts_before_the_lease_can_expire(tmp_path: Path, standin: Any, delay: float, then: str) -> None:  # noqa: F811
    ttl = timing_need(I, S, M)
    data = {
        "cluster": {"name": "timing", "store": f"local:{tmp_path}/unused.db", "state_dir": str(tmp_path / "state"),
                    "startup_wait": 0.0, "heartbeat_interval": I, "heartbeat_timeout": ttl, "store_timeout": S,
                    "fence_margin": M},
        "nodes": [{"name": "n1", "address": "127.0.0.1:1"}],
        "groups": [{"name": "g", "nodes": ["n1"], "resources": [{"name": "r", "type": "standin"}]}],
    }
    cfg = parse_config(data, source="", base_dir=tmp_path)
    loop = VirtualTimeLoop()
    backend = MemoryBackend(clock=loop.time)
    store = SlowStore(backend, delay=delay, good=10**9, then=then)
    fenced_at: list[float] = []

    async def scenario() -> None:
        agent = Agent(cfg, "n1", store=store, serve_api=False, clock=LoopClock())
        task = asyncio.create_task(agent.run())
        rt = agent.groups["g"]
        while rt.local != LocalState.RUNNING:
            await asyncio.sleep(0.01)
        await asyncio.sleep(3.0)  # a few healthy (slow) renewals
        store.good = store.renewals  # from now on the store fails
        while Steer.fence_calls == 0:
            await asyncio.sleep(0.001)
        fenced_at.append(Steer.fence_times[0])
        expires = store.last_landed + ttl  # the earliest the store drops the lease
        assert fenced_at[0] <= expires - M + 1e-6, (
            f"fence started at {fenced_at[0]:.4f}, only {expires - fenced_at[0]:.4f}s before the store's expiry "
            f"(fence_margin {M})")
        assert backend.leases, "the lease expired at the store before the fence"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert fenced_at


class RecordingWatchdog:
    """The watchdog as the agent drives it, on the loop's time: when it would fire, and whether it did."""

    path = "recording-watchdog"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.armed = False
        self.fires_at: float | None = None
        self.fired: float | None = None
        self.disarmed_at: float | None = None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def arm(self) -> None:
        if not self.armed:
            self.armed = True
            self.fires_at = self._now() + self.timeout

    def ping(self) -> None:
        self.arm()
        self.fires_at = self._now() + self.timeout

    def disarm(self) -> None:
        if self.armed:
            self.armed = False
            self.disarmed_at = self._now()

    def check(self) -> None:
        if self.armed and self.fired is None and self.fires_at is not None and self._now() >= self.fires_at:
            self.fired = self.fires_at


@pytest.mark.parametrize("then", ["hang", "refuse"])
@pytest.mark.parametrize("timers", [(0.3, 3.0, 0.5, 0.3), (0.2, 2.0, 0.3, 0.2), (0.15, 2.0, 0.25, 0.15)])
def test_a_store_outage_is_fenced_cleanly_before_the_watchdog_fires(
    tmp_path: Path, standin: Any, timers: tuple[float, float, float, float], then: str  # noqa: F811
) -> None:
    """Found by the fault campaign's slow-store: with the documented etcd timers (0.3 / 3.0 / 0.5 / 0.3,
    watchdog 2 s) the agent kept retrying its renewal until ``fence_margin`` before the lease's end, past
    the watchdog's own deadline, so every store outage reset the node instead of the clean fence and
    disarm of docs/fencing.md. Retries now stop in time for the fence to finish before the watchdog."""
    from kagemusha._watchdog import watchdog_timeout

    i, t, s, m = timers
    data = {
        "cluster": {"name": "wd", "store": f"local:{tmp_path}/unused.db", "state_dir": str(tmp_path / "state"),
                    "startup_wait": 0.0, "heartbeat_interval": i, "heartbeat_timeout": t, "store_timeout": s,
                    "fence_margin": m},
        "nodes": [{"name": "n1", "address": "127.0.0.1:1"}],
        "groups": [{"name": "g", "nodes": ["n1"], "resources": [{"name": "r", "type": "standin"}]}],
    }
    cfg = parse_config(data, source="", base_dir=tmp_path)
    wd = RecordingWatchdog(watchdog_timeout(t, s, m))
    loop = VirtualTimeLoop()
    backend = MemoryBackend(clock=loop.time)
    store = SlowStore(backend, delay=0.0, good=10**9, then=then)

    async def scenario() -> None:
        agent = Agent(cfg, "n1", store=store, serve_api=False, clock=LoopClock(), watchdog=wd)
        task = asyncio.create_task(agent.run())
        rt = agent.groups["g"]
        while rt.local != LocalState.RUNNING:
            await asyncio.sleep(0.01)
        await asyncio.sleep(2.0)
        store.good = store.renewals  # the store stops answering (or refuses) from now on
        while wd.disarmed_at is None and wd.fired is None:
            wd.check()
            await asyncio.sleep(0.001)
        assert wd.fired is None, f"the watchdog fired at {wd.fired:.3f} before the fence was done"
        assert Steer.fence_calls > 0, "disarmed without a fence"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
