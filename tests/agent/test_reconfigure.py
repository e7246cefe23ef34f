"""A config apply that changes a running group's resources is not lost when a fence interrupts it.

The agent stops the group in place with its old definition (``_replace``) and then puts the new one in
place. A fence (lease loss) cancels that worker halfway; the new definition must still replace the old
one once the fence has stopped it (found by the simulation, schedule ``apply-res-lost-on-fence``: the
node ran the old resource set for good).

An in-process agent on the in-memory store, with a stand-in driver that records what runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import tomli_w  # type: ignore[import-not-found]

from kagemusha.agent import Agent
from kagemusha.cluster import LocalState
from kagemusha.config import load_config
from kagemusha.control import apply_config
from kagemusha.model import StartEnv
from kagemusha.resources import REGISTRY, Probe, Resource
from kagemusha.testing import MemoryBackend, MemoryStore


class Runs:
    running: ClassVar[set[str]] = set()
    stop_blocks: ClassVar[bool] = False


class Recorder(Resource):
    type_name = "recorder"

    async def start(self, env: StartEnv) -> None:
        Runs.running.add(self.ctx.resource)

    async def stop(self, env: StartEnv) -> None:
        if Runs.stop_blocks:
            await asyncio.Event().wait()
        Runs.running.discard(self.ctx.resource)

    async def probe(self) -> Probe:
        return Probe.running("up") if self.ctx.resource in Runs.running else Probe.stopped("down")

    async def fence(self) -> None:
        Runs.running.discard(self.ctx.resource)


@pytest.fixture(autouse=True)
def recorder() -> Any:
    Runs.running, Runs.stop_blocks = set(), False
    REGISTRY["recorder"] = f"{__name__}:Recorder"
    yield
    del REGISTRY["recorder"]


def write_config(path: Path, tmp_path: Path, resources: list[str]) -> None:
    data = {
        "cluster": {"name": "reconf", "store": f"local:{tmp_path}/unused.db", "state_dir": str(tmp_path / "state"),
                    "startup_wait": 0.0},
        "nodes": [{"name": "n1", "address": "127.0.0.1:1"}],
        "groups": [{"name": "g", "nodes": ["n1"], "resources": [{"name": r, "type": "recorder"} for r in resources]}],
    }
    path.write_text(tomli_w.dumps(data))


async def wait_for(cond: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not reached within {timeout:g} s: {what}"
        await asyncio.sleep(0.005)


def test_resources_changed_by_apply_replace_the_old_ones_even_after_a_fence(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "cluster.toml", tmp_path / "cluster-v2.toml"
    write_config(v1, tmp_path, ["r1"])
    write_config(v2, tmp_path, ["r1", "r2"])
    backend = MemoryBackend()

    async def scenario() -> None:
        agent = Agent(load_config(v1), "n1", store=MemoryStore(backend), serve_api=False, apply_config=True)
        task = asyncio.create_task(agent.run())
        try:
            await wait_for(lambda: agent.groups["g"].local == LocalState.RUNNING, "g online")
            old = agent.groups["g"]
            Runs.stop_blocks = True  # the stop in place of the old definition hangs ...
            await apply_config(MemoryStore(backend), str(v2), by="test")
            await wait_for(lambda: old.local == LocalState.STOPPING, "the old definition stopping in place")
            # ... until the node loses its lease: the fence cancels that stop and stops the group itself
            assert agent.lease_id is not None
            await MemoryStore(backend).revoke(agent.lease_id)
            await wait_for(lambda: agent.statistics().fences >= 1, "the fence")
            Runs.stop_blocks = False
            await wait_for(lambda: agent.groups["g"].local == LocalState.RUNNING and Runs.running == {"r1", "r2"},
                           "g online again with the applied resources r1, r2")
            assert [r.name for r in agent.groups["g"].spec.resources] == ["r1", "r2"]
        finally:
            agent.request_leave("test done")
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
