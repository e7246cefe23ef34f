"""The in-memory store shipped for unit tests passes the same conformance suite, and its clock is fake."""

from __future__ import annotations

import asyncio

import pytest

from kagemusha.errors import LeaseExpired, StoreUnavailable
from kagemusha.testing import MemoryBackend, MemoryStore, check_store


def test_check_store_memory() -> None:
    backend = MemoryBackend()
    asyncio.run(check_store(lambda: MemoryStore(backend)))


def test_fake_clock_expires_leases_without_sleeping() -> None:
    now = [0.0]
    b = MemoryBackend(clock=lambda: now[0])

    async def run() -> None:
        s = MemoryStore(b)
        lease = await s.grant_lease(1.0)
        await s.put("k", "v", lease=lease.id)
        now[0] = 0.9
        assert await s.get("k") is not None
        now[0] = 1.01
        assert await s.get("k") is None
        with pytest.raises(LeaseExpired):
            await s.keepalive(lease.id)
        b.fail = True
        with pytest.raises(StoreUnavailable):
            await s.get("k")

    asyncio.run(run())
