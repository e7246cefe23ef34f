"""Each hole of issue 10, pinned: every test here fails on the agent before the safety redesign.

In-process agents on the in-memory store (it passes ``check_store``) with a stand-in driver whose
start, stop and fence the test steers; the watchdog stand-in is the real ``Watchdog`` class writing to
a FIFO that the test reads (never the machine's watchdog).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kagemusha._watchdog import Watchdog
from kagemusha.agent import Agent
from kagemusha.cluster import Action, ActionKind, LocalState
from kagemusha.config import parse_config
from kagemusha.errors import ResourceFailed
from kagemusha.model import ClpEvent, StartEnv
from kagemusha.protocol import ClusterRecords
from kagemusha.resources import REGISTRY, Probe, Resource
from kagemusha.testing import MemoryBackend, MemoryStore

# -- a stand-in driver the test steers ---------------------------------------------------------


class Steer:
    """What the stand-in does next, shared by every instance (the agent builds its own)."""

    running: ClassVar[set[str]] = set()
    fence_failures: ClassVar[int] = 0
    fence_calls: ClassVar[int] = 0
    #: the loop time of each fence call
    fence_times: ClassVar[list[float]] = []
    stop_fails: ClassVar[bool] = False
    start_blocks: ClassVar[bool] = False

    @classmethod
    def reset(cls) -> None:
        cls.running = set()
        cls.fence_failures = cls.fence_calls = 0
        cls.fence_times = []
        cls.stop_fails = cls.start_blocks = False


class Standin(Resource):
    type_name = "standin"

    async def start(self, env: StartEnv) -> None:
        if Steer.start_blocks:
            await asyncio.Event().wait()
        Steer.running.add(self.ctx.node)

    async def stop(self, env: StartEnv) -> None:
        if Steer.stop_fails:
            raise ResourceFailed("stand-in: stop fails")
        Steer.running.discard(self.ctx.node)

    async def probe(self) -> Probe:
        return Probe.running("up") if self.ctx.node in Steer.running else Probe.stopped("down")

    async def fence(self) -> None:
        Steer.fence_calls += 1
        Steer.fence_times.append(asyncio.get_running_loop().time())
        if Steer.fence_failures > 0:
            Steer.fence_failures -= 1
            raise ResourceFailed("stand-in: a process survived SIGKILL")
        Steer.running.discard(self.ctx.node)


@pytest.fixture(autouse=True)
def standin() -> Any:
    Steer.reset()
    REGISTRY["standin"] = f"{__name__}:Standin"
    yield
    del REGISTRY["standin"]


def config(tmp_path: Path, **cluster: Any) -> Any:
    data = {
        "cluster": {"name": "holes", "store": f"local:{tmp_path}/unused.db", "state_dir": str(tmp_path / "state"),
                    "startup_wait": 0.0, **cluster},
        "nodes": [{"name": "n1", "address": "127.0.0.1:1"}],
        "groups": [{"name": "g", "nodes": ["n1"], "resources": [{"name": "r", "type": "standin"}]}],
    }
    return parse_config(data, source="", base_dir=tmp_path)


def wd_config(tmp_path: Path, watchdog: Path) -> Any:
    """Timers that allow a whole-second watchdog (W = floor(2.0 - 0.3 - 0.2) = 1 s)."""
    return config(tmp_path, heartbeat_interval=0.2, heartbeat_timeout=2.0, store_timeout=0.3, fence_margin=0.2,
                  watchdog=str(watchdog))


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


class FifoWatchdog:
    """Reads what the agent writes to the watchdog stand-in, with the time each byte arrived."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.seen: list[tuple[float, bytes]] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        while True:
            with open(self.path, "rb", buffering=0) as f:  # reopened after each magic close
                while b := f.read(1):
                    self.seen.append((time.monotonic(), b))

    def last(self, byte: bytes) -> float | None:
        times = [t for t, b in self.seen if b == byte]
        return times[-1] if times else None


# -- actions carry their lease ---------------------------------------------------------------------


def test_take_never_writes_an_owner_without_a_lease(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = MemoryStore(MemoryBackend())
        rec = ClusterRecords(store, "holes", by="test")
        with pytest.raises(TypeError):
            await rec.take("g", "n1", event=ClpEvent.START, lease=None)  # type: ignore[arg-type]
        assert (await rec.snapshot()).group("g").owner is None

    asyncio.run(scenario())


def test_an_action_decided_under_a_lease_that_is_gone_is_dropped(tmp_path: Path) -> None:
    cfg = config(tmp_path)

    async def scenario() -> None:
        backend = MemoryBackend()
        agent = Agent(cfg, "n1", store=MemoryStore(backend), serve_api=False)
        old = await agent.store.grant_lease(5.0)
        new = await agent.store.grant_lease(5.0)
        agent.lease_id, agent.valid_until = new.id, time.monotonic() + 5.0
        # a TAKE decided under the old lease runs after the node got a new one: it must not run
        await agent._execute(Action(ActionKind.TAKE, "g", event=ClpEvent.START, lease=old.id, reason="test"))
        assert (await agent.records.snapshot()).group("g").owner is None
        assert agent.groups["g"].worker is None

    asyncio.run(scenario())


def test_fence_group_is_never_skipped_while_a_worker_runs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    Steer.start_blocks = True

    async def scenario() -> None:
        agent = Agent(cfg, "n1", store=MemoryStore(MemoryBackend()), serve_api=False)
        lease = await agent.store.grant_lease(5.0)
        agent.lease_id, agent.valid_until = lease.id, time.monotonic() + 5.0
        async with asyncio.TaskGroup() as tg:
            agent._tg = tg
            rt = agent.groups["g"]
            agent._spawn(rt, agent._start(rt, ClpEvent.START, lease.id))
            await wait_for(lambda: rt.local == LocalState.STARTING)
            await agent._execute(Action(ActionKind.FENCE_GROUP, "g", reason="running here but owned by n2"))
            assert Steer.fence_calls == 1, "the fence was skipped because a start worker ran"
            assert rt.worker is None and rt.local == LocalState.STOPPED

    asyncio.run(scenario())


# -- a fence is done only when proven ---------------------------------------------------------------


def test_an_incomplete_fence_keeps_the_claim_and_stops_feeding_the_watchdog(tmp_path: Path) -> None:
    wd = FifoWatchdog(tmp_path / "watchdog")
    cfg = wd_config(tmp_path, wd.path)
    backend = MemoryBackend()

    async def scenario() -> int:
        agent = Agent(cfg, "n1", store=MemoryStore(backend), serve_api=False)
        task = asyncio.create_task(agent.run())
        rt = agent.groups["g"]
        await wait_for(lambda: rt.local == LocalState.RUNNING)
        lease = agent.lease_id
        # a stop that fails makes the node fence itself; the fence cannot be proven for a while
        Steer.stop_fails = True
        Steer.fence_failures = 10**6
        await agent.records.set_target("g", False)
        await wait_for(lambda: rt.local == LocalState.FENCING and Steer.fence_calls >= 2)
        assert lease in backend.leases, "the lease was revoked although the fence is not proven"
        snap = await agent.records.snapshot()
        assert snap.group("g").owner is not None and snap.group("g").owner.node == "n1", "the claim was given up"
        assert any(e.get("kind") == "fence_incomplete" for e in snap.events)
        assert snap.group("g").status.get("local") == "fencing"
        assert agent.statistics().fence_incomplete == ("g",)
        # the fence makes no progress: the watchdog is no longer fed, so the machine would reset
        stuck_at = time.monotonic()
        await wait_for(lambda: time.monotonic() - stuck_at > agent.watchdog_seconds + 0.5, timeout=5)
        last_ping = wd.last(b"\0")
        assert last_ping is not None and time.monotonic() - last_ping > agent.watchdog_seconds, "still fed"
        assert task.done() is False
        # the fence goes through: now the lease goes and the agent exits
        Steer.fence_failures = 0
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(scenario()) == 1


def test_a_clean_fence_disarms_the_watchdog_before_it_fires(tmp_path: Path) -> None:
    wd = FifoWatchdog(tmp_path / "watchdog")
    cfg = wd_config(tmp_path, wd.path)
    backend = MemoryBackend()

    async def scenario() -> None:
        agent = Agent(cfg, "n1", store=MemoryStore(backend), serve_api=False)
        task = asyncio.create_task(agent.run())
        await wait_for(lambda: agent.groups["g"].local == LocalState.RUNNING)
        await wait_for(lambda: wd.last(b"\0") is not None)
        backend.fail = True  # store outage: the agent fences cleanly
        await wait_for(lambda: wd.last(b"V") is not None, timeout=5)
        pings_before = [t for t, b in wd.seen if b == b"\0" and t < (wd.last(b"V") or 0)]
        gap = (wd.last(b"V") or 0) - max(pings_before)
        assert gap < agent.watchdog_seconds, f"the watchdog would have reset the node ({gap:.2f}s without a ping)"
        backend.fail = False
        agent.request_leave("test")
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_a_watchdog_that_cannot_be_armed_starts_nothing(tmp_path: Path) -> None:
    cfg = wd_config(tmp_path, tmp_path / "no" / "such" / "watchdog")

    async def scenario() -> None:
        agent = Agent(cfg, "n1", store=MemoryStore(MemoryBackend()), serve_api=False)
        task = asyncio.create_task(agent.run())
        await wait_for(lambda: "watchdog" in agent._notes)
        assert agent.groups["g"].local == LocalState.STOPPED and not Steer.running
        assert (await agent.records.snapshot()).group("g").owner is None
        agent.request_leave("test")
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_a_real_device_that_refuses_the_timeout_is_an_error() -> None:
    # /dev/null is a character device without the watchdog ioctl: a device we cannot trust.
    with pytest.raises(OSError, match="cannot set the watchdog timeout"):
        Watchdog("/dev/null", 3).arm()


# -- the timing rule ---------------------------------------------------------------------------------


def test_a_config_that_ignores_the_renewal_round_trip_is_refused(tmp_path: Path) -> None:
    from kagemusha.errors import ConfigError

    # valid under the old rule (0.2 + 0.3 + 0.2 <= 0.7), although the last renewal's answer may take
    # 0.3 s and the next attempt 0.3 s more: the fence would start after the lease expired.
    with pytest.raises(ConfigError, match="2 \\* cluster.store_timeout"):
        config(tmp_path, heartbeat_interval=0.2, heartbeat_timeout=0.7, store_timeout=0.3, fence_margin=0.2)


# -- the group's local state machine ---------------------------------------------------------------


def test_the_group_state_machine_refuses_a_jump(tmp_path: Path) -> None:
    from kagemusha.agent._groups import GroupRuntime, InvalidTransition

    cfg = config(tmp_path)
    rt = GroupRuntime.build(cfg, cfg.group("g"), "n1")
    with pytest.raises(InvalidTransition):
        rt.local = LocalState.RUNNING  # stopped -> running skips starting
    rt.local = LocalState.STARTING
    rt.local = LocalState.FENCING  # any state may be fenced
    with pytest.raises(InvalidTransition):
        rt.local = LocalState.RUNNING  # a fence ends only in stopped, once proven
    rt.local = LocalState.STOPPED


# -- membership follows the lease ------------------------------------------------------------------


def test_a_member_key_lost_under_a_live_lease_is_written_again(tmp_path: Path) -> None:
    """The etcd campaign's wedge (issue 11, run 410 of packet-loss): a join that timed out at the client
    reached etcd late, after the join that succeeded, and put the member key under the abandoned lease;
    that lease expired and took the key with it. The agent still held and renewed its own lease, so its
    owner key stayed, but without its member key it fenced the group ("no lease: cannot prove
    ownership") and never joined again: the group was stuck on it, and no other node could take it."""
    cfg = config(tmp_path, heartbeat_interval=0.1, heartbeat_timeout=2.0, store_timeout=0.3, fence_margin=0.2)
    backend = MemoryBackend()

    async def scenario() -> None:
        agent = Agent(cfg, "n1", store=MemoryStore(backend), serve_api=False)
        task = asyncio.create_task(agent.run())
        rt = agent.groups["g"]
        await wait_for(lambda: rt.local == LocalState.RUNNING)
        lease = agent.lease_id
        # the late join: the member key goes under a lease the agent gave up, which then ends
        late = await agent.store.grant_lease(5.0)
        await agent.records.join("n1", lease=late.id, address="127.0.0.1:1", pid=os.getpid())
        await agent.store.revoke(late.id)
        assert "n1" not in (await agent.records.snapshot()).members

        async def member_again() -> bool:
            snap = await agent.records.snapshot()
            return snap.member_leases.get("n1") == lease

        deadline = time.monotonic() + 10
        while not await member_again():
            assert time.monotonic() < deadline, "the agent never wrote its member key again"
            await asyncio.sleep(0.02)
        await wait_for(lambda: rt.local == LocalState.RUNNING and "n1" in Steer.running)
        assert agent.lease_id == lease, "the lease was given up although it was never lost"
        agent.request_leave("test")
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def test_a_worker_cancelled_before_it_ran_leaves_no_unawaited_coroutine(tmp_path: Path) -> None:
    """A fence right after a spawn cancels the worker before its first step: Python warned that the start
    was never awaited (seen in the simulation's output)."""
    import gc
    import warnings

    cfg = config(tmp_path)

    async def scenario() -> None:
        agent = Agent(cfg, "n1", store=MemoryStore(MemoryBackend()), serve_api=False)
        async with asyncio.TaskGroup() as tg:
            agent._tg = tg
            rt = agent.groups["g"]
            agent._spawn(rt, agent._start(rt, ClpEvent.START, None))
            await agent._cancel_worker(rt)  # before the worker ran at all

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        asyncio.run(scenario())
        gc.collect()
    assert not [w for w in seen if "never awaited" in str(w.message)], [str(w.message) for w in seen]
