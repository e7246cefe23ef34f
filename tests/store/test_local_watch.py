"""How the local store's watch wakes: on a signal from writers that changed keys, at a lease's expiry, and by
polling where inotify is missing; lease renewals wake nothing.

Each test makes the safety-net poll (``WATCH_IDLE_POLL``) longer than the test, so only the wake-up under
test can deliver the event in time.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kagemusha.store import WatchEvent, WatchEventType
from kagemusha.store import local as local_mod
from kagemusha.store.local import LocalStore


@pytest.fixture(autouse=True)
def no_safety_net_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_mod, "WATCH_IDLE_POLL", 600.0)


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.Event]:
    """Set (the last element) each time a watch starts waiting for a wake-up: the test writes only then."""
    events: list[asyncio.Event] = []
    real = local_mod.FileChanges.wait

    async def wait(self: local_mod.FileChanges, timeout: float) -> bool:
        if events:
            events[-1].set()
        return await real(self, timeout)

    monkeypatch.setattr(local_mod.FileChanges, "wait", wait)
    return events


async def next_event(it: object, timeout: float = 10.0) -> WatchEvent:
    return await asyncio.wait_for(it.__anext__(), timeout)  # type: ignore[attr-defined]


def test_a_write_by_another_client_wakes_the_watch(tmp_path: Path, parked: list[asyncio.Event]) -> None:
    async def run() -> None:
        a, b = LocalStore(str(tmp_path / "s.db")), LocalStore(str(tmp_path / "s.db"))
        try:
            rev = await a.put("/p/x", "1")
            parked.append(asyncio.Event())
            it = b.watch("/p/", start_revision=rev + 1)
            first = asyncio.ensure_future(next_event(it))
            await asyncio.wait_for(parked[-1].wait(), 10)  # the watch polled, found nothing, and waits
            await a.put("/p/x", "2")
            ev = await first
            assert (ev.type, ev.key, ev.value) == (WatchEventType.PUT, "/p/x", "2")
            await it.aclose()
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_a_lease_expiry_is_delivered_at_the_expiry_without_any_other_client(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = LocalStore(str(tmp_path / "s.db")), LocalStore(str(tmp_path / "s.db"))
        try:
            lease = await a.grant_lease(1.0)
            rev = await a.put("/p/member", "n1", lease=lease.id)
            await a.close()  # the owner is gone: nobody renews, nobody writes
            it = b.watch("/p/", start_revision=rev + 1)
            ev = await next_event(it)  # only the wake-up at the expiry can deliver it (no other poll, no write)
            assert (ev.type, ev.key) == (WatchEventType.DELETE, "/p/member")
            await it.aclose()
        finally:
            await b.close()

    asyncio.run(run())


def test_lease_renewals_do_not_signal_watches(tmp_path: Path) -> None:
    async def run() -> None:
        a = LocalStore(str(tmp_path / "s.db"))
        try:
            lease = await a.grant_lease(5.0)
            await a.put("/p/member", "n1", lease=lease.id)
            signal = Path(a.signal_path)
            before = signal.stat().st_mtime_ns
            os.utime(signal, ns=(0, 0))
            for _ in range(5):
                await a.keepalive(lease.id)
            assert signal.stat().st_mtime_ns == 0, "a renewal wrote the signal file"
            await a.put("/p/other", "x")
            assert signal.stat().st_mtime_ns > 0 and before > 0
        finally:
            await a.close()

    asyncio.run(run())


def test_without_inotify_the_watch_polls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_mod.FileChanges, "open", classmethod(lambda cls, path: None))

    async def run() -> None:
        a, b = LocalStore(str(tmp_path / "s.db")), LocalStore(str(tmp_path / "s.db"))
        try:
            rev = await a.put("/p/x", "1")
            it = b.watch("/p/", start_revision=rev + 1)
            first = asyncio.ensure_future(next_event(it))
            await a.put("/p/x", "2")
            assert (await first).value == "2"  # by the poll: the safety net is off, there is no signal
            await it.aclose()
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_a_deleted_signal_file_is_watched_again(tmp_path: Path, parked: list[asyncio.Event]) -> None:
    async def run() -> None:
        a, b = LocalStore(str(tmp_path / "s.db")), LocalStore(str(tmp_path / "s.db"))
        try:
            rev = await a.put("/p/x", "1")
            parked.append(asyncio.Event())
            it = b.watch("/p/", start_revision=rev + 1)
            first = asyncio.ensure_future(next_event(it))
            await asyncio.wait_for(parked[-1].wait(), 10)
            parked.append(asyncio.Event())
            os.unlink(a.signal_path)  # wakes the watch (nothing to deliver); it watches the name again
            await asyncio.wait_for(parked[-1].wait(), 10)
            await a.put("/p/x", "2")
            assert (await first).value == "2"
            await it.aclose()
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())
