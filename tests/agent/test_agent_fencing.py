"""The agent in-process on the in-memory store: a store outage fences the group before the lease can expire.

The store is ``kagemusha.testing.MemoryStore`` (it passes ``check_store``); the resource is a real exec
resource whose service is a real process, so "fenced" means that process is gone.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil

from kagemusha.agent import Agent
from kagemusha.cluster import LocalState
from kagemusha.config import load_config
from kagemusha.testing import MemoryBackend, MemoryStore

START = """#!/bin/sh
sleep 3600 > /dev/null 2>&1 &
echo $! > "$SVC/svc.pid"
echo start >> "$SVC/trace"
"""
STOP = """#!/bin/sh
[ -f "$SVC/svc.pid" ] && kill "$(cat "$SVC/svc.pid")" 2>/dev/null
echo stop >> "$SVC/trace"
"""


def write_cluster(d: Path) -> Path:
    for name, text in (("start.sh", START), ("stop.sh", STOP)):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    cfg = d / "cluster.toml"
    cfg.write_text(f"""
[cluster]
name = "mem"
store = "local:{d}/unused.db"
state_dir = "{d}/state"
startup_wait = 0.0

[[nodes]]
name = "n1"
address = "127.0.0.1:1"

[[groups]]
name = "g"
nodes = ["n1"]

[[groups.resources]]
name = "exec1"
type = "exec"
start = "start.sh"
stop = "stop.sh"
env = {{ SVC = "{d}" }}
""")
    return cfg


def alive(pidfile: Path) -> bool:
    try:
        return psutil.Process(int(pidfile.read_text())).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, psutil.Error):
        return False


async def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_store_outage_fences_before_the_lease_could_expire(tmp_path: Path) -> None:
    cfg = load_config(write_cluster(tmp_path))
    backend = MemoryBackend()

    async def scenario() -> int:
        agent = Agent(cfg, "n1", store=MemoryStore(backend), serve_api=False)
        task = asyncio.create_task(agent.run())
        await wait_for(lambda: agent.groups["g"].local == LocalState.RUNNING)
        pidfile = tmp_path / "svc.pid"
        assert alive(pidfile)
        # outage: from now on no renewal lands; the lease may expire at valid_until at the earliest
        backend.fail = True
        deadline = agent.valid_until
        await wait_for(lambda: not alive(pidfile), timeout=cfg.cluster.heartbeat_timeout + 1)
        fenced_at = time.monotonic()
        assert fenced_at < deadline, f"service died {fenced_at - deadline:.3f}s after the lease could expire"
        assert deadline - fenced_at >= 0.0
        await wait_for(lambda: agent.groups["g"].local == LocalState.STOPPED, timeout=1.0)
        assert agent.lease_id is None
        # nothing starts without a lease
        await asyncio.sleep(0.5)
        assert not alive(pidfile)
        # the store is back: a new lease, and the group starts once more
        backend.fail = False
        await wait_for(lambda: agent.groups["g"].local == LocalState.RUNNING)
        assert (tmp_path / "trace").read_text().split() == ["start", "start"], "fencing runs no stop script"
        agent.request_leave("test")
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(scenario()) == 0
    assert (tmp_path / "trace").read_text().split() == ["start", "start", "stop"]
