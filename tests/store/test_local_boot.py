"""Local-store leases survive no reboot (issue 10): CLOCK_MONOTONIC restarts near zero at boot, so a
lease kept only as a monotonic expiry would outlive the reboot by the previous uptime. Each lease
records the boot id; a lease of another boot is expired. Fails on the store before the boot id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kagemusha.errors import LeaseExpired
from kagemusha.store.local import LocalStore, current_boot_id


def test_a_lease_from_another_boot_is_expired(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")

    async def scenario() -> None:
        before = LocalStore(db, clock=lambda: 100_000.0, boot_id="boot-before")  # long uptime
        lease = await before.grant_lease(10.0)
        await before.put("/k/owner", "n1", lease=lease.id)
        await before.close()
        # after the reboot: the monotonic clock is small again, far "before" the old expiry
        after = LocalStore(db, clock=lambda: 5.0, boot_id="boot-after")
        assert await after.get("/k/owner") is None, "the owner key outlived the reboot"
        with pytest.raises(LeaseExpired):
            await after.keepalive(lease.id)
        await after.close()

    asyncio.run(scenario())


def test_a_lease_of_this_boot_lives_on(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")

    async def scenario() -> None:
        a = LocalStore(db, clock=lambda: 10.0)
        lease = await a.grant_lease(10.0)
        await a.put("/k/owner", "n1", lease=lease.id)
        b = LocalStore(db, clock=lambda: 11.0)
        assert (await b.get("/k/owner")) is not None
        assert await b.keepalive(lease.id) == 10.0
        await a.close()
        await b.close()

    assert current_boot_id()  # Linux: the kernel gives one
    asyncio.run(scenario())
