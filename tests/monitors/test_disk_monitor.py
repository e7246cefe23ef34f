"""disk monitor: the hang guard (no root) and real mounts in a harness node (root)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from kagemusha.monitors import MonitorContext, monitor_class
from kagemusha.monitors.disk import DiskMonitor, DiskMonitorParams
from kagemusha.testing.netns import Harness
from tests.testing._nsrun import ns_call

CTX = MonitorContext("c", "g", "sdw1", "n", Path("/nonexistent"))


def test_registered_and_params() -> None:
    assert monitor_class("disk") is DiskMonitor
    for bad in ({"mount_point": "/"}, {"mount_point": "data"}, {"mount_point": "/d", "device": "sdb"}):
        with pytest.raises(ValidationError):
            DiskMonitorParams.model_validate(bad)


def test_not_mounted() -> None:
    r = asyncio.run(DiskMonitor(DiskMonitorParams(mount_point="/kg-surely-not-mounted"), CTX).check())
    assert not r.ok and "not mounted" in r.detail


def test_hung_io_fails_fast_until_it_returns() -> None:
    release = threading.Event()
    mon = DiskMonitor(DiskMonitorParams(mount_point="/proc", writable=False), CTX)
    calls = []

    def stuck() -> None:
        calls.append(1)
        release.wait(10)

    mon._io = stuck  # type: ignore[method-assign]

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await mon.check()
        r = await mon.check()  # answers at once, no second stuck thread
        assert not r.ok and "still hanging" in r.detail
        assert len(calls) == 1
        release.set()
        for _ in range(100):
            if mon._busy_since is None:
                break
            await asyncio.sleep(0.01)
        mon._io = lambda: None  # type: ignore[method-assign]
        assert (await mon.check()).ok

    asyncio.run(main())


CHECK = """
from kagemusha.monitors import MonitorContext
from kagemusha.monitors.disk import DiskMonitor, DiskMonitorParams

async def main(**params):
    r = await DiskMonitor(DiskMonitorParams(**params), MonitorContext("c", "g", "m", "n", Path("/x"))).check()
    return [r.ok, r.detail]
"""


@pytest.mark.root
def test_real_disk(harness: Harness) -> None:
    h = harness
    mp = str(h.tmp / "data1")
    dev = h.disk.device
    h.run("n1", ["mkdir", "-p", mp])
    assert ns_call(h, "n1", CHECK, mount_point=mp, device=dev)[0] is False
    h.run("n1", ["mount", dev, mp])
    h.run("n1", ["sh", "-c", f"echo x > {mp}/alive"])
    ok, detail = ns_call(h, "n1", CHECK, mount_point=mp, device=dev, file="alive")
    assert ok, detail
    ok, detail = ns_call(h, "n1", CHECK, mount_point=mp, device=dev, file="missing")
    assert not ok and "missing" in detail
    # Not mounted on n2, whatever n1 does.
    ok, detail = ns_call(h, "n2", CHECK, mount_point=mp, device=dev)
    assert not ok and "not mounted" in detail
    h.run("n1", ["mount", "-o", "remount,ro", mp])
    ok, detail = ns_call(h, "n1", CHECK, mount_point=mp, device=dev)
    assert not ok and "read-only" in detail
    h.run("n1", ["umount", mp])
    h.run("n1", ["mount", "-t", "tmpfs", "kgtmp", mp])
    ok, detail = ns_call(h, "n1", CHECK, mount_point=mp, device=dev)
    assert not ok and "kgtmp mounted, not" in detail
