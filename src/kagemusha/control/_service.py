"""Cluster control through the store: what ``kagemusha status/group/node/monitor`` and the REST API do.

Every action is a write to the store that the agents act on, so any node can take it and it works
while a node is down. ``status()`` derives each group's state from the owner key (under the owner's
lease) and the status record its node writes, so a crashed node's stale record never shows as online.
Actions are validated here, once, for the CLI and the API alike (``UnknownName``, ``UsageError``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from kagemusha.config import Config, GroupSpec
from kagemusha.control._status import derive_status
from kagemusha.errors import KagemushaError
from kagemusha.protocol import ClusterRecords, Snapshot
from kagemusha.store import Store, open_cluster_store

__all__ = ["ActionFailed", "ClusterControl", "UnknownName", "UsageError"]


class ActionFailed(KagemushaError):
    """The requested action did not happen in time; the message says what the cluster shows instead."""


class UsageError(KagemushaError):
    """The request cannot be (exit 2 in the CLI, 422 in the API).

    ``field`` names the request field at fault when there is one (``to``, ``node``).
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class UnknownName(UsageError):
    """The request names a group, node or monitor the config does not have (404 in the API for a path).

    ``kind`` is ``group``, ``node`` or ``monitor``; a name given in a request body is a ``UsageError``
    with ``field`` set instead (422 naming the field).
    """

    def __init__(self, message: str, *, kind: str, field: str = "") -> None:
        super().__init__(message, field=field)
        self.kind = kind


@dataclass
class ClusterControl:
    """Read and steer a cluster through its store.

    Usage::

        async with ClusterControl.open(config) as ctl:
            print(await ctl.status())
            await ctl.move_group("webotx1", "n2", wait=60)

    Args:
        config: the cluster's config (a callable returning it, for a server whose config changes).
        store: a store client (closed by ``close`` only when ``owns_store``).
        by: who acts (``cli root@host``, ``api token``), recorded with every request and event.
        wait_zero_returns: ``wait=0`` answers at once with the current state (the API's 202).
    """

    config_source: Config | Callable[[], Config]
    store: Store
    by: str = "cli"
    owns_store: bool = True
    wait_zero_returns: bool = False
    records: ClusterRecords = field(init=False)

    def __post_init__(self) -> None:
        self.records = ClusterRecords(self.store, self.config.cluster.name, by=self.by)

    @property
    def config(self) -> Config:
        src = self.config_source
        return src if isinstance(src, Config) else src()

    @classmethod
    def open(cls, config: Config, *, by: str = "cli") -> ClusterControl:
        """A control service with a store client of its own, opened the way the agent opens it (TLS, auth)."""
        from pathlib import Path

        base = str(Path(config.source).resolve().parent) if config.source else None
        store = open_cluster_store(config.cluster, base_dir=base, timeout=max(config.cluster.store_timeout, 2.0))
        return cls(config, store, by)

    def acting_as(self, by: str) -> ClusterControl:
        """The same service (same store client) recording ``by`` as the actor."""
        return ClusterControl(self.config_source, self.store, by, owns_store=False, wait_zero_returns=self.wait_zero_returns)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.owns_store:
            await self.store.close()

    # -- reading ----------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        return await self.records.snapshot()

    async def status(self) -> dict[str, Any]:
        return derive_status(self.config, await self.snapshot(), time.time())

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        return (await self.snapshot()).events[-limit:]

    # -- validation (one place for the CLI and the API) --------------------------------------

    def check_group(self, name: str) -> GroupSpec:
        try:
            return self.config.group(name)
        except KeyError:
            groups = ", ".join(g.name for g in self.config.groups) or "none"
            raise UnknownName(f'no group "{name}" (groups: {groups})', kind="group") from None

    def check_node(self, name: str, *, field: str = "") -> None:
        if name not in self.config.node_names:
            msg = f'no node "{name}" (nodes: {", ".join(self.config.node_names)})'
            if field:
                raise UsageError(msg, field=field)
            raise UnknownName(msg, kind="node")

    def check_group_node(self, group: str, node: str, *, field: str = "node") -> GroupSpec:
        """``node`` must be a node of ``group`` (it is named in a request body as ``field``)."""
        spec = self.check_group(group)
        self.check_node(node, field=field)
        if node not in spec.nodes:
            raise UsageError(f'node "{node}" is not one of group {group}\'s nodes ({", ".join(spec.nodes)})', field=field)
        return spec

    def check_monitor(self, group: str, monitor: str) -> None:
        spec = self.check_group(group)
        if monitor not in [m.name for m in spec.monitors]:
            raise UnknownName(f'group {group} has no monitor "{monitor}"', kind="monitor")

    # -- actions ----------------------------------------------------------------------------

    async def audit(self, group: str | None, kind: str, reason: str) -> None:
        await self.records.record_event(group, kind, reason)

    async def start_group(self, group: str, node: str | None = None, *, wait: float = 120.0) -> dict[str, Any]:
        if node is not None:
            self.check_group_node(group, node, field="node")
        else:
            self.check_group(group)
        await self.records.clear_failures(group)
        if node is not None:
            await self.records.request_move(group, node)
        await self.records.set_target(group, True)
        await self.audit(group, "start_requested", f"group start{' on ' + node if node else ''}")
        return await self.wait_group(group, lambda g: g["state"] == "online" and (node is None or g["node"] == node),
                                     wait, f"online{' on ' + node if node else ''}")

    async def stop_group(self, group: str, *, wait: float = 120.0) -> dict[str, Any]:
        self.check_group(group)
        await self.records.set_target(group, False)
        await self.audit(group, "stop_requested", "group stop")
        return await self.wait_group(group, lambda g: g["state"] in ("offline", "failed") and g["node"] is None, wait, "offline")

    async def move_group(self, group: str, to: str, *, wait: float = 120.0) -> dict[str, Any]:
        self.check_group_node(group, to, field="to")
        snap = await self.snapshot()
        if to not in snap.members:
            raise ActionFailed(f"cannot move {group} to {to}: node {to} is down")
        if to in snap.standby:
            raise ActionFailed(f"cannot move {group} to {to}: node {to} is in standby")
        if any(f.node == to for f in snap.group(group).failures):
            await self.records.clear_failures(group, to)
        await self.records.request_move(group, to)
        await self.audit(group, "move_requested", f"group move to {to}")
        return await self.wait_group(group, lambda g: g["state"] == "online" and g["node"] == to, wait, f"online on {to}")

    async def set_standby(self, node: str, on: bool, *, wait: float = 120.0) -> dict[str, Any]:
        self.check_node(node)
        await self.records.set_standby(node, on)
        await self.audit(None, "standby" if on else "unstandby", f"node {node} {'standby' if on else 'unstandby'}")
        if not on or (wait <= 0 and self.wait_zero_returns):
            return await self.status()
        deadline = time.monotonic() + wait
        while True:
            st = await self.status()
            # Drained: nothing runs there, and what left has settled (online elsewhere, or offline).
            if not any(g["node"] == node or g["state"] in ("starting", "stopping") for g in st["groups"]):
                return st
            if time.monotonic() > deadline:
                raise ActionFailed(f"node {node} still runs {[g['name'] for g in st['groups'] if g['node'] == node]} after {wait:g}s")
            await asyncio.sleep(0.1)

    async def suspend_monitor(self, group: str, monitor: str, on: bool) -> dict[str, Any]:
        """Suspend (or resume) a monitor; returns the group's status."""
        self.check_monitor(group, monitor)
        await self.records.suspend_monitor(group, monitor, on)
        await self.audit(group, "monitor_suspend" if on else "monitor_resume", f"monitor {monitor}")
        st = await self.status()
        return dict(next(g for g in st["groups"] if g["name"] == group))

    async def wait_group(self, group: str, ok: Any, wait: float, want: str) -> dict[str, Any]:
        if wait <= 0 and self.wait_zero_returns:
            st = await self.status()
            return dict(next(g for g in st["groups"] if g["name"] == group))
        deadline = time.monotonic() + wait
        while True:
            st = await self.status()
            g = next(x for x in st["groups"] if x["name"] == group)
            if ok(g):
                return dict(g)
            if time.monotonic() > deadline:
                where = f" on {g['node']}" if g["node"] else ""
                why = f" ({g['reason']})" if g.get("reason") else ""
                raise ActionFailed(f"group {group} is not {want} after {wait:g}s: it is {g['state']}{where}{why}")
            await asyncio.sleep(0.1)
