"""The simulated world the agents run in: store faults, driver and monitor stand-ins, watchdogs, invariants.

Everything here runs on one ``VirtualTimeLoop`` (``_vloop.py``) and keeps its state in one ``World``:

- ``SimBackend``: the in-memory store (``MemoryBackend``) on virtual time, which expires leases at their
  deadline (as etcd's lessor does, so watchers hear of it at once) and checks after every write that no
  owner key exists without a live lease.
- ``SimStore``: one client of it per agent process, implementing the ``Store`` contract with the faults
  the schedule injects: outage (every client), partition of one node (refused, or no answer until the
  client's timeout), slow answers (a request leg and an answer leg; past the client's ``store_timeout``
  the call fails although the write may still land, late), lost packets (half the requests are
  retransmitted: the client gives up, the request lands up to seconds later, after calls made since), a
  hung agent (its calls wait until it wakes)
  and a dead one (its calls never return).
- ``SimResource`` / ``SimMonitor`` (types ``sim``): driver and monitor stand-ins. A resource's state lives
  in the world, per (node, group, resource), not in the driver object, so the supervisor's fresh drivers
  fence what the dead agent started. A resource counts as running from the moment ``start`` is called
  (its side effects may already be live) until ``stop``/``fence`` returns successfully.
- ``SimWatchdog``: the node's watchdog device; if armed and not pinged within its timeout it resets the
  node (a node crash).

Which agent process a driver call comes from is known through a ``ContextVar`` (``current_proc``): each
agent runs in a task whose context names its ``Proc``; asyncio copies the context into every task the
agent creates.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kagemusha.errors import LeaseExpired, ResourceFailed, StoreUnavailable
from kagemusha.monitors._base import CheckResult, Monitor
from kagemusha.resources._base import DriverParams, Probe, Resource, StartEnv
from kagemusha.store._base import KeyValue, Lease, Store, StoreCapabilities, WatchEvent
from kagemusha.testing._memory import MemoryBackend

__all__ = [
    "Proc",
    "SimBackend",
    "SimMonitor",
    "SimResource",
    "SimStore",
    "SimWatchdog",
    "World",
    "current_proc",
    "current_world",
]

current_world: contextvars.ContextVar[World] = contextvars.ContextVar("kagemusha_sim_world")
current_proc: contextvars.ContextVar[Proc] = contextvars.ContextVar("kagemusha_sim_proc")


@dataclass(eq=False)
class Proc:
    """One process on a node: an agent, the supervisor fencing after it, or the operator's CLI."""

    node: str
    kind: str  # "agent" | "supervisor" | "ctl"
    pid: int
    dead: bool = False
    #: set while the process is hung: everything it awaits waits for this event
    hold: asyncio.Event | None = None
    task: asyncio.Task[Any] | None = None
    agent: Any = None
    clock: Any = None
    config: Any = None
    #: lease ids this process was granted
    leases: set[int] = field(default_factory=set)


class Violation(Exception):
    """Not raised: the text of a broken invariant is collected in ``World.violations``."""


class World:
    """The shared state of one simulated run (one schedule)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random, *, client_timeout: float, root: str,
                 owner_of: Callable[[KeyValue, str], str | None]) -> None:
        self.loop = loop
        self.rng = rng
        self.client_timeout = client_timeout
        self.root = root
        #: (key, root) -> group name when the key is a group's owner key (the store protocol's parser)
        self.owner_of = owner_of
        self.backend = SimBackend(self)
        self.violations: list[str] = []
        self.timeline: list[tuple[float, str, str, str, str]] = []
        #: group -> node -> resources running there
        self.running: dict[str, dict[str, set[str]]] = {}
        self.lease_proc: dict[int, Proc] = {}
        self.owner_keys: dict[str, str] = {}  # key -> group
        self.next_pid = 100
        self.procs: list[Proc] = []
        self.closing = False
        #: virtual seconds between a write and its delivery to watchers
        self.watch_delay = 0.002
        # faults
        self.outage = False
        self.partitions: dict[str, str] = {}  # node -> "refuse" | "blackhole"
        #: node -> (max delay, slow leg: answer|request|both, or lost: past the timeout by up to the delay)
        self.slow: dict[str, tuple[float, str]] = {}
        self.stop_fail: dict[tuple[str, str], str] = {}  # (node, group) -> "raise" | "hang"
        self.fence_fail: set[str] = set()
        self.fence_delay: dict[str, float] = {}
        self.monitor_fail: set[tuple[str, str]] = set()
        self.watchdogs: dict[str, SimWatchdog] = {}
        self.resets: list[tuple[float, str]] = []

    # -- processes --------------------------------------------------------------

    def new_proc(self, node: str, kind: str) -> Proc:
        self.next_pid += 1
        p = Proc(node, kind, self.next_pid)
        self.procs.append(p)
        return p

    async def forever(self) -> None:
        await self.loop.create_future()

    async def gate(self, p: Proc) -> None:
        """Return only while ``p`` may act: a dead process never returns, a hung one waits."""
        while True:
            if self.closing:
                raise asyncio.CancelledError()
            if p.dead:
                await self.forever()
                continue
            if p.hold is not None and not p.hold.is_set():
                await p.hold.wait()
                continue
            return

    def notify(self) -> None:
        """Wake every watch (a write, or a fault that changes who can reach the store)."""
        b = self.backend
        waiters, b.waiters = b.waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    def now(self) -> float:
        return self.loop.time()

    def note(self, node: str, group: str, resource: str, what: str) -> None:
        self.timeline.append((self.now(), node, group, resource, what))

    def violation(self, text: str) -> None:
        self.violations.append(f"t={self.now():.3f} {text}")

    # -- resources ----------------------------------------------------------------

    def live_lease_of(self, p: Proc) -> set[int]:
        b = self.backend
        b.reap()
        return {lid for lid in p.leases if lid in b.leases}

    def resource_up(self, p: Proc, group: str, resource: str) -> None:
        """A start begins: check that the node may run the group now, then count it as running."""
        node = p.node
        byn = self.running.setdefault(group, {})
        others = sorted(n for n, rs in byn.items() if rs and n != node)
        if others:
            self.violation(f"split-brain: {group} starts {resource} on {node} while it runs on {','.join(others)}")
        live = self.live_lease_of(p)
        if not live:
            self.violation(f"start-without-lease: {node} starts {group}/{resource} without a live lease")
        owner = self.owner_record(group)
        if owner is None or owner[0] != node or owner[1] not in live:
            self.violation(
                f"start-without-ownership: {node} starts {group}/{resource} but the owner key is "
                f"{'absent' if owner is None else f'{owner[0]} under lease {owner[1]}'} (its live leases: {sorted(live)})"
            )
        rs = byn.setdefault(node, set())
        if resource not in rs:
            rs.add(resource)
            self.note(node, group, resource, "started")

    def resource_down(self, node: str, group: str, resource: str, why: str) -> None:
        rs = self.running.get(group, {}).get(node)
        if rs and resource in rs:
            rs.discard(resource)
            self.note(node, group, resource, f"stopped ({why})")

    def is_running(self, node: str, group: str, resource: str) -> bool:
        return resource in self.running.get(group, {}).get(node, ())

    def owner_record(self, group: str) -> tuple[str, int | None] | None:
        b = self.backend
        b.reap()
        for key, g in self.owner_keys.items():
            if g == group and key in b.kv:
                kv = b.kv[key]
                try:
                    node = json.loads(kv.value).get("node")
                except ValueError:
                    node = None
                return (str(node), kv.lease)
        return None

    # -- node-level faults ------------------------------------------------------------

    def kill(self, p: Proc) -> None:
        p.dead = True
        if p.hold is not None:
            p.hold.set()
        p.hold = None
        if p.task is not None and not p.task.done():
            p.task.cancel()
        self.notify()

    def node_crash(self, node: str, why: str) -> None:
        """The machine stops: its processes die, every resource it ran is gone, its watchdog with it."""
        for p in self.procs:
            if p.node == node and not p.dead:
                self.kill(p)
        for group, byn in self.running.items():
            for r in sorted(byn.get(node, ())):
                self.resource_down(node, group, r, why)
        wd = self.watchdogs.get(node)
        if wd is not None:
            wd.disarm()


class SimBackend(MemoryBackend):
    """``MemoryBackend`` on the world's virtual clock: leases expire at their deadline; owner keys checked."""

    def __init__(self, world: World) -> None:
        super().__init__(clock=world.loop.time)
        self.world = world
        self.waiters: list[asyncio.Future[None]] = []

    def set(self, key: str, value: str, lease: int | None) -> int:
        rev = super().set(key, value, lease)
        w = self.world
        group = w.owner_keys.get(key)
        if group is None:
            group = w.owner_of(self.kv[key], w.root)
            if group is not None:
                w.owner_keys[key] = group
        if group is not None and (lease is None or lease not in self.leases):
            w.violation(f"owner-without-lease: owner key of {group} written with lease {lease} (value {value})")
        w.notify()
        return rev

    def remove(self, key: str) -> None:
        super().remove(key)
        self.world.notify()

    def drop(self, lid: int) -> None:
        """A lease ends (expiry or revoke): the node must no longer run a group it owned under it."""
        w = self.world
        proc = w.lease_proc.get(lid)
        if proc is not None and lid in self.leases:
            for key, group in w.owner_keys.items():
                kv = self.kv.get(key)
                running = w.running.get(group, {}).get(proc.node)
                if kv is not None and kv.lease == lid and running:
                    how = "expired" if self.leases[lid][1] <= self.clock() else "was revoked"
                    w.violation(f"run-past-lease: {proc.node} still runs {group} ({','.join(sorted(running))}) "
                                f"when lease {lid}, which holds its owner key, {how}")
        super().drop(lid)

    def expire_at(self, when: float) -> None:
        self.world.loop.call_at(when, self.reap)

    # The store's operations, applied at the moment a request reaches it (MemoryStore's semantics).

    def op_get(self, key: str) -> KeyValue | None:
        self.reap()
        return self.kv.get(key)

    def op_get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        self.reap()
        return [self.kv[k] for k in sorted(self.kv) if k.startswith(prefix)], self.revision

    def _lease_ok(self, lease: int | None) -> None:
        if lease is not None and lease not in self.leases:
            raise LeaseExpired(f"lease {lease} does not exist")

    def op_put(self, key: str, value: str, lease: int | None) -> int:
        self.reap()
        self._lease_ok(lease)
        return self.set(key, value, lease)

    def op_cas(self, key: str, value: str, expected_revision: int, lease: int | None) -> bool:
        self.reap()
        self._lease_ok(lease)
        cur = self.kv.get(key)
        if (cur.mod_revision if cur else 0) != expected_revision:
            return False
        self.set(key, value, lease)
        return True

    def op_delete(self, key: str, expected_revision: int | None) -> bool:
        self.reap()
        cur = self.kv.get(key)
        if cur is None or (expected_revision is not None and cur.mod_revision != expected_revision):
            return False
        self.remove(key)
        return True

    def op_grant(self, ttl: float, proc: Proc) -> Lease:
        self.reap()
        lid = self.next_lease
        self.next_lease += 1
        expires = self.clock() + ttl
        self.leases[lid] = (ttl, expires)
        self.expire_at(expires)
        proc.leases.add(lid)
        self.world.lease_proc[lid] = proc
        return Lease(lid, ttl)

    def op_keepalive(self, lease_id: int) -> float:
        self.reap()
        if lease_id not in self.leases:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked")
        ttl = self.leases[lease_id][0]
        expires = self.clock() + ttl
        self.leases[lease_id] = (ttl, expires)
        self.expire_at(expires)
        return ttl

    def op_revoke(self, lease_id: int) -> None:
        self.reap()
        self.drop(lease_id)


class SimStore(Store):
    """One process's client of the world's store, with the schedule's faults (see the module docstring)."""

    capabilities = StoreCapabilities(spans_hosts=True, linearizable=True)

    def __init__(self, world: World, proc: Proc) -> None:
        self.w = world
        self.p = proc

    def _unreachable(self) -> str | None:
        w = self.w
        if w.outage:
            return "refuse"
        return w.partitions.get(self.p.node) if self.p.kind != "ctl" else None

    async def _call(self, op: Callable[[], Any]) -> Any:
        w, p = self.w, self.p
        await w.gate(p)
        timeout = w.client_timeout
        mode = self._unreachable()
        if mode == "refuse":
            raise StoreUnavailable("sim: store unreachable (connection refused)")
        if mode == "blackhole":
            await asyncio.sleep(timeout)
            await w.gate(p)
            raise StoreUnavailable("sim: store did not answer")
        slow = w.slow.get(p.node) if p.kind != "ctl" else None
        if slow is None:
            return op()
        most, how = slow
        if how == "lost":
            # Packet loss: a request either goes through at once or is retransmitted by TCP long after the
            # client gave up (and closed the connection: the kernel still sends what it had buffered), so
            # it lands after requests the client made since (how a join landed after its retry's, etcd
            # campaign of issue 11).
            there = timeout + most * w.rng.uniform(0.0, 1.0) if w.rng.random() < 0.5 else 0.0
            back = 0.0
        else:
            delay = most * w.rng.uniform(0.5, 1.0)
            # Which leg is slow: the answer (the store acted long before the client hears of it), the
            # request (it acts late), or either.
            share = {"answer": (0.0, 0.2), "request": (0.8, 1.0)}.get(how, (0.0, 1.0))
            there = delay * w.rng.uniform(*share)
            back = delay - there
        if there >= timeout:
            # The request arrives after the client gave up: it may still change the store.
            w.loop.call_at(w.loop.time() + there, self._late, op)
            await asyncio.sleep(timeout)
            await w.gate(p)
            raise StoreUnavailable("sim: store answered too late")
        await asyncio.sleep(there)
        if self._unreachable() is not None:
            await w.gate(p)
            raise StoreUnavailable("sim: store unreachable")
        try:
            result, error = op(), None
        except (LeaseExpired, StoreUnavailable) as exc:
            result, error = None, exc
        if there + back > timeout:
            await asyncio.sleep(timeout - there)
            await w.gate(p)
            raise StoreUnavailable("sim: store answered too late")
        await asyncio.sleep(back)
        await w.gate(p)
        if error is not None:
            raise error
        return result

    def _late(self, op: Callable[[], Any]) -> None:
        if self._unreachable() is not None or self.w.closing:
            return
        try:
            op()
        except (LeaseExpired, StoreUnavailable):
            pass

    async def get(self, key: str) -> KeyValue | None:
        b = self.w.backend
        r: KeyValue | None = await self._call(lambda: b.op_get(key))
        return r

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        b = self.w.backend
        r: tuple[list[KeyValue], int] = await self._call(lambda: b.op_get_prefix(prefix))
        return r

    async def put(self, key: str, value: str, *, lease: int | None = None) -> int:
        b = self.w.backend
        r: int = await self._call(lambda: b.op_put(key, value, lease))
        return r

    async def cas(self, key: str, value: str, *, expected_revision: int, lease: int | None = None) -> bool:
        b = self.w.backend
        r: bool = await self._call(lambda: b.op_cas(key, value, expected_revision, lease))
        return r

    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        b = self.w.backend
        r: bool = await self._call(lambda: b.op_delete(key, expected_revision))
        return r

    async def grant_lease(self, ttl: float) -> Lease:
        b = self.w.backend
        r: Lease = await self._call(lambda: b.op_grant(ttl, self.p))
        return r

    async def keepalive(self, lease_id: int) -> float:
        b = self.w.backend
        r: float = await self._call(lambda: b.op_keepalive(lease_id))
        return r

    async def revoke(self, lease_id: int) -> None:
        b = self.w.backend
        await self._call(lambda: b.op_revoke(lease_id))

    async def watch(self, prefix: str, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        w, p, b = self.w, self.p, self.w.backend
        await w.gate(p)
        if self._unreachable() is not None:
            raise StoreUnavailable("sim: store unreachable (watch)")
        nxt = b.revision + 1 if start_revision is None else start_revision
        pos = bisect.bisect_left([e.revision for e in b.events], nxt) if start_revision is not None else len(b.events)
        while True:
            while pos < len(b.events):
                e = b.events[pos]
                pos += 1
                if e.revision >= nxt and e.key.startswith(prefix):
                    nxt = e.revision + 1
                    yield e
            fut: asyncio.Future[None] = w.loop.create_future()
            b.waiters.append(fut)
            await fut
            if w.watch_delay:
                # etcd delivers watch events a little after the write; what lands meanwhile comes in one batch.
                await asyncio.sleep(w.watch_delay)
            await w.gate(p)
            if self._unreachable() is not None:
                raise StoreUnavailable("sim: store unreachable (watch)")

    async def close(self) -> None:
        return None


class SimWatchdog:
    """The node's watchdog device: armed while the agent says groups run; not pinged in time -> reset."""

    def __init__(self, world: World, node: str, timeout: float) -> None:
        self.w = world
        self.node = node
        self.timeout = timeout
        self.path = f"sim-watchdog-{node}"
        self.armed = False
        self.pings = 0
        self._timer: asyncio.TimerHandle | None = None

    def _restart(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.w.loop.call_at(self.w.now() + self.timeout, self._fire)

    def arm(self) -> None:
        if not self.armed:
            self.armed = True
            self._restart()

    def ping(self) -> None:
        self.arm()
        self.pings += 1
        self._restart()

    def disarm(self) -> None:
        self.armed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self.armed and not self.w.closing:
            self.w.resets.append((self.w.now(), self.node))
            self.w.note(self.node, "", "", "watchdog reset")
            self.w.node_crash(self.node, "watchdog reset")


# -- driver and monitor stand-ins ----------------------------------------------------------


class SimResource(Resource):
    """A resource that exists only in the simulated world (type ``sim``)."""

    type_name: ClassVar[str] = "sim"
    default_start_timeout: ClassVar[float] = 5.0
    default_stop_timeout: ClassVar[float] = 2.0

    class Params(DriverParams):
        start_delay: float = 0.05
        stop_delay: float = 0.05

    params: Params

    def _where(self) -> tuple[World, Proc]:
        return current_world.get(), current_proc.get()

    async def start(self, env: StartEnv) -> None:
        w, p = self._where()
        await w.gate(p)
        w.resource_up(p, self.ctx.group, self.ctx.resource)
        await asyncio.sleep(self.params.start_delay)
        await w.gate(p)

    async def stop(self, env: StartEnv) -> None:
        w, p = self._where()
        await w.gate(p)
        await asyncio.sleep(self.params.stop_delay)
        await w.gate(p)
        how = w.stop_fail.get((p.node, self.ctx.group))
        if how == "hang":
            await asyncio.sleep(3600.0)
        if how is not None:
            raise ResourceFailed(f"sim: stop of {self.ctx.resource} failed")
        w.resource_down(p.node, self.ctx.group, self.ctx.resource, f"stop by {p.kind} {p.pid}")

    async def fence(self) -> None:
        w, p = self._where()
        await w.gate(p)
        delay = w.fence_delay.get(p.node, 0.0)
        if delay:
            await asyncio.sleep(delay)
            await w.gate(p)
        if p.node in w.fence_fail:
            raise ResourceFailed(f"sim: fence of {self.ctx.resource} failed")
        w.resource_down(p.node, self.ctx.group, self.ctx.resource, f"fence by {p.kind} {p.pid}")

    async def probe(self) -> Probe:
        w, p = self._where()
        await w.gate(p)
        return Probe.running() if w.is_running(p.node, self.ctx.group, self.ctx.resource) else Probe.stopped()


class SimMonitor(Monitor):
    """A monitor whose answer the schedule decides (type ``sim``)."""

    type_name: ClassVar[str] = "sim"

    async def check(self) -> CheckResult:
        w, p = current_world.get(), current_proc.get()
        await w.gate(p)
        if (p.node, self.ctx.group) in w.monitor_fail:
            return CheckResult(False, "sim: injected monitor failure")
        return CheckResult(True)
