"""The OS façade's command runner and holder search (no root needed)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kagemusha import _os


def test_run_collects_output_and_status() -> None:
    res = asyncio.run(_os.run(["sh", "-c", "echo out; echo err >&2; exit 3"]))
    assert (res.returncode, res.stdout, res.stderr, res.ok) == (3, "out\n", "err\n", False)
    assert res.summary() == "sh -c echo out; echo err >&2; exit 3 exited 3: err"
    with pytest.raises(FileNotFoundError):
        asyncio.run(_os.run(["kg-no-such-command"]))


def test_cancelled_command_leaves_nothing_running(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                # A child of the command too: the whole process group must go.
                await _os.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo $$ >> {pidfile}; wait"])

    asyncio.run(main())
    pids = [int(x) for x in pidfile.read_text().split()]
    time.sleep(0.1)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_find_and_kill_holders_by_path(tmp_path: Path) -> None:
    # Not a mount point: matching falls back to paths (no st_dev to compare), same mount namespace only.
    inside = tmp_path / "mnt"
    inside.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=inside)
    outside = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    try:
        for _ in range(100):
            if os.readlink(f"/proc/{holder.pid}/cwd") == str(inside):
                break
            time.sleep(0.01)
        found = _os.find_holders(str(inside))
        assert [(h.pid, h.why) for h in found] == [(holder.pid, "cwd")]
        killed = asyncio.run(_os.kill_holders(str(inside), grace=1.0))
        assert [h.pid for h in killed] == [holder.pid]
        assert holder.wait(timeout=5) == -15
        assert outside.poll() is None
    finally:
        for p in (holder, outside):
            p.kill()
            p.wait()
