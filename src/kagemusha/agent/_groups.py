"""One failover group on one node: its drivers, its local state, start/stop/fence of its resources."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kagemusha._aio import within
from kagemusha.cluster import LocalState, MonitorRequest
from kagemusha.config import Config, GroupSpec, MonitorSpec, ResourceSpec
from kagemusha.errors import KagemushaError
from kagemusha.monitors import Monitor, MonitorContext, monitor_class
from kagemusha.resources import (
    ClpDisk,
    ClpEvent,
    ClpServer,
    ProbeState,
    Resource,
    ResourceContext,
    StartEnv,
    driver_class,
)

__all__ = ["TRANSITIONS", "GroupRuntime", "InvalidTransition", "MonitorState", "StopFailed"]

log = logging.getLogger("kagemusha.group")


class StopFailed(KagemushaError):
    """A resource could not be stopped: the node must fence itself before anyone else starts the group."""


class InvalidTransition(KagemushaError):
    """A bug: the agent moved a group between local states the state machine does not allow."""


async def _together(coros: list[Coroutine[Any, Any, str | None]]) -> list[str | None]:
    """Run ``coros`` at once and return their results in order.

    A task group, not ``gather``: if one raises (a driver bug) or the worker is cancelled (a fence),
    every sibling is cancelled *and awaited* before this returns, so no start or stop goes on behind
    the fence's back.
    """
    if len(coros) == 1:
        return [await coros[0]]
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(c) for c in coros]
    return [t.result() for t in tasks]


_S = LocalState
#: The group's local state machine. Any state may also go to STOP_FAILED (a worker crashed: the node
#: fences) and to FENCING; FENCING leaves only to STOPPED, once the fence is proven.
TRANSITIONS: dict[LocalState, frozenset[LocalState]] = {
    _S.STOPPED: frozenset({_S.STARTING, _S.STOPPING}),
    # STARTING -> STOPPED: a start dropped before any resource started (its lease went meanwhile)
    _S.STARTING: frozenset({_S.RUNNING, _S.START_FAILED, _S.STOPPED}),
    _S.RUNNING: frozenset({_S.STOPPING}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.START_FAILED: frozenset({_S.STOPPING}),
    _S.STOP_FAILED: frozenset({_S.STOPPING}),
    _S.FENCING: frozenset({_S.STOPPED}),
}


@dataclass
class MonitorState:
    spec: MonitorSpec
    monitor: Monitor
    consecutive: int = 0
    total_failures: int = 0
    last_ok: bool | None = None
    last_detail: str = ""
    last_at: float = 0.0
    suspended: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "last": None if self.last_ok is None else ("ok" if self.last_ok else "failed"),
            "detail": self.last_detail,
            "fail_count": self.consecutive,
            "failures": self.total_failures,
            "at": self.last_at,
            "suspended": self.suspended,
        }


@dataclass
class GroupRuntime:
    spec: GroupSpec
    node: str
    resources: list[tuple[ResourceSpec, Resource]]
    monitors: list[MonitorState]
    state: LocalState = LocalState.STOPPED
    reason: str = ""
    env: StartEnv = field(default_factory=StartEnv)
    resource_states: dict[str, str] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    request: MonitorRequest | None = None
    worker: asyncio.Task[None] | None = None
    #: counters for metrics: starts, failovers (starts with CLP_EVENT=FAILOVER), last durations (s)
    stats: dict[str, float] = field(default_factory=lambda: {
        "starts": 0, "failovers": 0, "restarts": 0, "last_start_seconds": 0.0, "last_failover_seconds": 0.0})
    #: removed from the config: stopped, then dropped
    retiring: bool = False
    #: bumped when a worker finishes: a plan made from a snapshot read before that is stale for this group.
    epoch: int = 0
    monitor_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, config: Config, spec: GroupSpec, node: str) -> GroupRuntime:
        base = Path(config.source).resolve().parent if config.source else None
        state_root = Path(config.state_dir_of(node)) / "groups" / spec.name
        res = []
        for rs in spec.resources:
            drv = driver_class(rs.type)
            ctx = ResourceContext(
                cluster=config.cluster.name,
                group=spec.name,
                resource=rs.name,
                node=node,
                state_dir=state_root,
                cluster_id=config.cluster_id,
                log=logging.getLogger(f"kagemusha.resource.{rs.type}"),
                base_dir=base,
                env=dict(config.node(node).env),
            )
            res.append((rs, drv(drv.Params.model_validate(rs.params), ctx)))
        mons = []
        for ms in spec.monitors:
            mcls = monitor_class(ms.type)
            mctx = MonitorContext(
                cluster=config.cluster.name,
                group=spec.name,
                monitor=ms.name,
                node=node,
                state_dir=state_root,
                cluster_id=config.cluster_id,
                log=logging.getLogger(f"kagemusha.monitor.{ms.type}"),
                base_dir=base,
                env=dict(config.node(node).env),
            )
            mons.append(MonitorState(ms, mcls(mcls.Params.model_validate(ms.params), mctx)))
        rt = cls(spec=spec, node=node, resources=res, monitors=mons)
        rt.resource_states = {rs.name: "stopped" for rs, _ in res}
        return rt

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def local(self) -> LocalState:
        """The group's state on this node; every change goes through ``TRANSITIONS``."""
        return self.state

    @local.setter
    def local(self, new: LocalState) -> None:
        old = self.state
        if new != old and new not in (LocalState.STOP_FAILED, LocalState.FENCING) and new not in TRANSITIONS[old]:
            raise InvalidTransition(f"group {self.name}: {old.value} -> {new.value} is not a transition")
        self.state = new

    def start_env(self, event: ClpEvent) -> StartEnv:
        server = ClpServer.HOME if self.spec.home == self.node else ClpServer.OTHER
        return StartEnv(event=event, server=server, disk=ClpDisk.SUCCESS)

    def _timeout(self, rs: ResourceSpec, drv: Resource, which: str) -> float:
        val = rs.start_timeout if which == "start" else rs.stop_timeout
        return float(val if val is not None else (drv.default_start_timeout if which == "start" else drv.default_stop_timeout))

    def waves(self, only: list[tuple[ResourceSpec, Resource]] | None = None) -> list[list[tuple[ResourceSpec, Resource]]]:
        """The group's resources in start order, as waves whose members start together.

        The order in ``cluster.toml`` is the dependency order. Consecutive ``independent`` resources
        (addresses, disks: they use none of the others) share a wave unless one ``needs`` another
        (a disk mounted inside another's mount point); any other resource (a script, a domain) may use
        everything listed before it, so it is a wave of its own. The seed's ``fip1``, ``sd1``, ``exec1``
        is two waves: ``fip1`` with ``sd1``, then ``exec1``. Stopping goes through the waves in reverse.
        """
        out: list[list[tuple[ResourceSpec, Resource]]] = []
        for item in only if only is not None else self.resources:
            drv = item[1]
            cur = out[-1] if out else None
            if (cur is not None and drv.independent and all(d.independent for _, d in cur)
                    and not any(drv.needs(d) for _, d in cur)):
                cur.append(item)
            else:
                out.append([item])
        return out

    async def _start_one(self, rs: ResourceSpec, drv: Resource) -> str | None:
        """Start one resource within its ``start_timeout``; the failure as text, or None."""
        self.resource_states[rs.name] = "starting"
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout(rs, drv, "start")):
                await drv.start(self.env)
        except TimeoutError:
            self.resource_states[rs.name] = "failed"
            return f"resource {rs.name} start timed out after {self._timeout(rs, drv, 'start'):g}s"
        except (KagemushaError, OSError) as exc:
            self.resource_states[rs.name] = "failed"
            return f"resource {rs.name} failed to start: {exc}"
        self.resource_states[rs.name] = "online"
        log.info(
            "resource started",
            extra={"kv": {"group": self.name, "resource": rs.name, "event": self.env.event.value,
                          "seconds": round(time.monotonic() - t0, 3)}},
        )
        return None

    async def start_resources(self, event: ClpEvent) -> None:
        """Start every resource, wave by wave (``waves``). On failure stop what started (reverse) and raise.

        A disk resource that fails makes ``CLP_DISK=FAILURE`` for the group's exec
        resources, which still run (the seed's scripts branch on it), and the
        start counts as failed. After any other failure, nothing further starts.

        Raises:
            ResourceFailed-like KagemushaError: the start failed (resources stopped again).
            StopFailed: the start failed and a resource could not be stopped again.
        """
        self.env = self.start_env(event)
        started: list[tuple[ResourceSpec, Resource]] = []
        failure: str | None = None
        for wave in self.waves():
            if failure is not None:
                wave = [(rs, drv) for rs, drv in wave if self.env.disk == ClpDisk.FAILURE and rs.type == "exec"]
                if not wave:
                    continue
            # NB: a failed or timed-out resource may be half-started: it is stopped again with the others.
            started.extend(wave)
            results = await _together([self._start_one(rs, drv) for rs, drv in wave])
            for (_, drv), res in zip(wave, results):
                if res is not None:
                    failure = failure or res
                    if drv.is_disk:
                        self.env = StartEnv(self.env.event, self.env.server, ClpDisk.FAILURE)
        if failure is not None:
            await self.stop_resources(only=started)
            raise KagemushaError(failure)

    async def _stop_one(self, rs: ResourceSpec, drv: Resource) -> str | None:
        """Stop one resource within its ``stop_timeout``; the failure as text, or None."""
        self.resource_states[rs.name] = "stopping"
        try:
            async with asyncio.timeout(self._timeout(rs, drv, "stop")):
                await drv.stop(self.env)
        except TimeoutError:
            self.resource_states[rs.name] = "stop_failed"
            return f"{rs.name} stop timed out after {self._timeout(rs, drv, 'stop'):g}s"
        except (KagemushaError, OSError) as exc:
            self.resource_states[rs.name] = "stop_failed"
            return f"{rs.name}: {exc}"
        self.resource_states[rs.name] = "stopped"
        return None

    async def stop_resources(self, only: list[tuple[ResourceSpec, Resource]] | None = None) -> None:
        """Stop resources wave by wave in reverse order (a wave's members together), each within its
        ``stop_timeout``. A failed stop does not keep the others from being tried.

        Raises:
            StopFailed: a resource could not be stopped (the others were still tried).
        """
        failed: list[str] = []
        for wave in reversed(self.waves(only)):
            results = await _together([self._stop_one(rs, drv) for rs, drv in reversed(wave)])
            failed.extend(r for r in results if r is not None)
        if failed:
            raise StopFailed("; ".join(failed))

    async def fence(self) -> list[str]:
        """Kill/remove/unmount every resource at once, no scripts. Returns problems (never raises)."""
        problems = []
        results = await asyncio.gather(*(drv.fence() for _, drv in reversed(self.resources)), return_exceptions=True)
        for (rs, _), res in zip(reversed(self.resources), results):
            if isinstance(res, BaseException):
                problems.append(f"{rs.name}: {res}")
            self.resource_states[rs.name] = "stopped"
        return problems

    async def probe_all(self) -> dict[str, tuple[ProbeState, str]]:
        out = {}
        for rs, drv in self.resources:
            try:
                p = await within(drv.probe(), 30)
                out[rs.name] = (p.state, p.reason)
            except Exception as exc:  # noqa: BLE001 - a probe that errors is not "stopped"
                out[rs.name] = (ProbeState.FAILED, f"probe error: {exc}")
        return out

    def status_record(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "local": self.local.value,
            "reason": self.reason,
            "event": self.env.event.value,
            "resources": dict(self.resource_states),
            "monitors": {m.spec.name: m.summary() for m in self.monitors},
        }
