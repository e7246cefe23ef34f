"""A group's resources start in waves: independent ones (address, disk) together, scripts after them.

The root tests run the real drivers (floating_ip, disk on a loop device, exec scripts) inside a
harness node; the overlap of a wave is proven by a rendezvous (each start of the wave waits until
the other one has begun: run one after the other, the first would never see the second), never by
a clock. The logic tests (wave shapes, a fence cancelling a wave) use stand-in drivers.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kagemusha.agent._groups import GroupRuntime
from kagemusha.config import parse_config
from kagemusha.model import ClpEvent, StartEnv
from kagemusha.resources import REGISTRY, Probe, Resource
from kagemusha.testing.netns import Harness
from tests.testing._nsrun import ns_call

# -- wave shapes (no root) ---------------------------------------------------------------------


def runtime(tmp_path: Path, resources: str) -> GroupRuntime:
    text = f"""
[cluster]
name = "c"
store = "local:{tmp_path}/unused.db"
state_dir = "{tmp_path}"
[[nodes]]
name = "n1"
address = "127.0.0.1:7700"
[[groups]]
name = "g"
nodes = ["n1"]
{resources}
"""
    (tmp_path / "start.sh").write_text("#!/bin/sh\n")
    (tmp_path / "start.sh").chmod(0o755)
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    cfg = parse_config(tomllib.loads(text), source=str(path), base_dir=tmp_path)
    return GroupRuntime.build(cfg, cfg.groups[0], "n1")


FIP = '[[groups.resources]]\nname = "{n}"\ntype = "floating_ip"\naddress = "198.18.0.100/24"\ninterface = "eth0"\n'
DISK = '[[groups.resources]]\nname = "{n}"\ntype = "disk"\ndevice = "/dev/loop9"\nmount_point = "{mp}"\n'
EXEC = '[[groups.resources]]\nname = "{n}"\ntype = "exec"\nstart = "start.sh"\nstop = "start.sh"\n'


def shape(rt: GroupRuntime) -> list[list[str]]:
    return [[rs.name for rs, _ in w] for w in rt.waves()]


def test_seed_order_is_two_waves(tmp_path: Path) -> None:
    rt = runtime(tmp_path, FIP.format(n="fip1") + DISK.format(n="sd1", mp="/data1") + EXEC.format(n="exec1"))
    assert shape(rt) == [["fip1", "sd1"], ["exec1"]]


def test_a_script_splits_the_waves(tmp_path: Path) -> None:
    rt = runtime(tmp_path, EXEC.format(n="pre") + FIP.format(n="fip1") + EXEC.format(n="mid")
                 + DISK.format(n="sd1", mp="/data1") + FIP.format(n="fip2"))
    assert shape(rt) == [["pre"], ["fip1"], ["mid"], ["sd1", "fip2"]]


def test_nested_mount_points_wait_for_each_other(tmp_path: Path) -> None:
    rt = runtime(tmp_path, DISK.format(n="sd1", mp="/data1") + DISK.format(n="sd2", mp="/data1/sub")
                 + DISK.format(n="sd3", mp="/data2") + FIP.format(n="fip1"))
    assert shape(rt) == [["sd1"], ["sd2", "sd3", "fip1"]]
    # The stop order is the reverse, wave by wave (a subset keeps the same rule).
    assert [[rs.name for rs, _ in w] for w in rt.waves(rt.resources[:2])] == [["sd1"], ["sd2"]]


# -- a fence (cancellation) during a wave leaves nothing behind (stand-in drivers) ---------------


class Held(Resource):
    """Starts and never finishes until cancelled; records what ran and whether it was cancelled."""

    type_name: ClassVar[str] = "test_held"
    independent: ClassVar[bool] = True
    begun: ClassVar[list[str]] = []
    ended: ClassVar[list[str]] = []

    async def start(self, env: StartEnv) -> None:
        Held.begun.append(self.ctx.resource)
        try:
            await asyncio.Event().wait()
        finally:
            Held.ended.append(self.ctx.resource)

    async def stop(self, env: StartEnv) -> None:
        pass

    async def probe(self) -> Probe:
        return Probe.stopped()


@pytest.fixture
def held_driver() -> Any:
    REGISTRY["test_held"] = f"{__name__}:Held"
    Held.begun.clear()
    Held.ended.clear()
    yield Held
    del REGISTRY["test_held"]


def test_cancelled_wave_ends_every_member_before_returning(tmp_path: Path, held_driver: Any) -> None:
    rt = runtime(tmp_path, '[[groups.resources]]\nname = "a"\ntype = "test_held"\n'
                 '[[groups.resources]]\nname = "b"\ntype = "test_held"\n' + EXEC.format(n="exec1"))
    assert shape(rt) == [["a", "b"], ["exec1"]]

    async def main() -> None:
        task = asyncio.create_task(rt.start_resources(ClpEvent.FAILOVER))
        deadline = asyncio.get_running_loop().time() + 30
        while sorted(Held.begun) != ["a", "b"]:
            assert asyncio.get_running_loop().time() < deadline, "the wave's members did not both begin"
            await asyncio.sleep(0.01)
        task.cancel()  # what a fence does to the group's worker
        with pytest.raises(asyncio.CancelledError):
            await task
        # Both members ended when the cancelled start returned: nothing goes on behind the fence's back.
        assert sorted(Held.ended) == ["a", "b"]

    asyncio.run(main())


# -- real drivers in a harness node (root) ------------------------------------------------------


@pytest.fixture
def harness() -> Any:
    from kagemusha.testing import netns

    netns.require()
    with netns.Harness(["n1", "n2"]) as h:
        yield h


WAVES = """
from kagemusha.agent._groups import GroupRuntime
from kagemusha.config import parse_config
from kagemusha.model import ClpEvent

async def main(text, source, together):
    import tomllib
    cfg = parse_config(tomllib.loads(text), source=source, base_dir=Path(source).parent)
    rt = GroupRuntime.build(cfg, cfg.groups[0], "n1")
    drivers = {rs.name: drv for rs, drv in rt.resources}
    began = {(op, n): asyncio.Event() for op in ("start", "stop") for n in together}

    def rendezvous(op, name):
        real = getattr(drivers[name], op)
        async def run(env):
            began[(op, name)].set()
            for other in together:  # run one after the other, this would wait for ever
                await asyncio.wait_for(began[(op, other)].wait(), 30)
            await real(env)
        setattr(drivers[name], op, run)

    for name in together:
        rendezvous("start", name)
        rendezvous("stop", name)
    await rt.start_resources(ClpEvent.FAILOVER)
    after_start = dict(rt.resource_states)
    await rt.stop_resources()
    return [after_start, dict(rt.resource_states)]
"""


@pytest.mark.root
def test_seed_group_starts_address_and_disk_together_then_the_script(harness: Harness, tmp_path: Path) -> None:
    h = harness
    mp = tmp_path / "data1"
    seen = tmp_path / "seen"
    # The script checks, in the node, that both resources of the first wave are up when it starts and
    # still up when it stops (the reverse order).
    check = (f"#!/bin/sh\nset -e\nmountpoint -q {mp}\nip -4 addr show dev eth0 | grep -q ' {h.vip.ip}/'\n"
             f"echo \"$1 $CLP_EVENT $CLP_DISK\" >> {seen}\n")
    (tmp_path / "start.sh").write_text(check.replace("$1", "start"))
    (tmp_path / "stop.sh").write_text(check.replace("$1", "stop"))
    for s in ("start.sh", "stop.sh"):
        (tmp_path / s).chmod(0o755)
    text = f"""
[cluster]
name = "waves"
store = "local:{tmp_path}/unused.db"
state_dir = "{tmp_path / 'state'}"
[[nodes]]
name = "n1"
address = "{h.address('n1').ip}:7700"
[[groups]]
name = "g"
nodes = ["n1"]
[[groups.resources]]
name = "fip1"
type = "floating_ip"
address = "{h.vip}"
interface = "eth0"
[[groups.resources]]
name = "sd1"
type = "disk"
device = "{h.disk.device}"
mount_point = "{mp}"
[[groups.resources]]
name = "exec1"
type = "exec"
start = "start.sh"
stop = "stop.sh"
"""
    after_start, after_stop = ns_call(h, "n1", WAVES, text=text, source=str(tmp_path / "cluster.toml"),
                                      together=["fip1", "sd1"], timeout=120)
    assert after_start == {"fip1": "online", "sd1": "online", "exec1": "online"}
    assert after_stop == {"fip1": "stopped", "sd1": "stopped", "exec1": "stopped"}
    assert seen.read_text().splitlines() == ["start FAILOVER SUCCESS", "stop FAILOVER SUCCESS"]
    assert h.vip_holders() == [] and h.disk_holders() == []
