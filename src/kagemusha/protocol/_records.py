"""Typed writers for every change the agents and the operators make to a cluster's keys.

Duties: one method per change (take, release, mark a failure, record an event, request a move, ...);
each knows its key (from ``Keys``) and its record's shape, so the agent, ``control`` and the API never
spell a key or a record.

Atomicity: each method is one store call unless its docstring says otherwise; ``take`` and ``release``
compare and write in one step.

Errors: what the store raises (``StoreUnavailable``, ``LeaseExpired``) passes through unchanged; a
lost race is a ``False`` return value.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from kagemusha._clock import Clock, SystemClock
from kagemusha.model import ClpEvent
from kagemusha.protocol._layout import Keys, Snapshot, parse_snapshot
from kagemusha.store import KeyValue, Store, WatchEvent

__all__ = ["ClusterRecords"]


class ClusterRecords:
    """The cluster's records in ``store``, read and written by ``actor`` (``agent n1``, ``cli root@h``).

    Usage::

        rec = ClusterRecords(store, "webotx", by="cli root@host")
        snap = await rec.snapshot()
        await rec.request_move("webotx1", "n2")
    """

    def __init__(self, store: Store, cluster: str, *, by: str, source: str = "ctl", clock: Clock | None = None) -> None:
        self.store = store
        self.cluster = cluster
        self.keys = Keys(cluster)
        self.by = by
        #: what event keys are suffixed with: the node's name for an agent, ``ctl`` for operators.
        self.source = source
        self.clock: Clock = clock or SystemClock()
        self._last_event_ns = 0

    @property
    def root(self) -> str:
        return self.keys.root

    # -- reading ------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Every key of the cluster, parsed. Raises ``StoreUnavailable``."""
        kvs, rev = await self.store.get_prefix(self.keys.root)
        return parse_snapshot(kvs, rev, self.keys.root)

    def watch(self, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Every change under the cluster's root, from ``start_revision`` on when given (see ``Store.watch``)."""
        return self.store.watch(self.keys.root, start_revision=start_revision)

    async def config_record(self) -> KeyValue | None:
        return await self.store.get(self.keys.config)

    # -- membership -----------------------------------------------------------------

    async def join(self, node: str, *, lease: int, address: str, pid: int) -> None:
        """Announce ``node`` as a member under ``lease`` (the key goes with the lease)."""
        member = {"address": address, "pid": pid, "since": self.clock.time()}
        await self.store.put(self.keys.member(node), json.dumps(member), lease=lease)

    async def set_standby(self, node: str, on: bool) -> None:
        if on:
            await self._put(self.keys.standby(node), {})
        else:
            await self.store.delete(self.keys.standby(node))

    # -- ownership ------------------------------------------------------------------

    async def take(self, group: str, node: str, *, event: ClpEvent, lease: int) -> bool:
        """Make ``node`` the owner of ``group`` under ``lease``, only if nobody owns it.

        NB: an owner key without a lease would never expire: ``lease`` is required, and a lease that is
        gone raises ``LeaseExpired`` (the test ``test_take_never_writes_an_owner_without_a_lease``).

        Returns:
            ``False`` when another node owns it.
        """
        if not isinstance(lease, int):
            raise TypeError("take() needs the lease the decision was made under")
        owner = json.dumps({"node": node, "event": event.value, "since": self.clock.time()})
        return await self.store.cas(self.keys.group(group, "owner"), owner, expected_revision=0, lease=lease)

    async def release(self, group: str, node: str) -> bool:
        """Delete the owner key if ``node`` holds it (compare-and-delete on its revision)."""
        key = self.keys.group(group, "owner")
        cur = await self.store.get(key)
        if cur is None:
            return False
        try:
            holder = json.loads(cur.value).get("node")
        except (ValueError, AttributeError):
            holder = None
        if holder != node:
            return False
        return await self.store.delete(key, expected_revision=cur.mod_revision)

    async def record_run(self, group: str, node: str, *, clean: bool, reason: str) -> None:
        """``last``: who ran the group last and whether it let go cleanly (FAILOVER vs START next)."""
        await self._put(self.keys.group(group, "last"), {"node": node, "clean": clean, "reason": reason})

    # -- recovery bookkeeping ----------------------------------------------------------

    async def mark_failure(self, group: str, node: str, *, at: float, reason: str) -> None:
        await self.store.put(self.keys.failure(group, node), json.dumps({"at": at, "reason": reason}))

    async def set_failovers(self, group: str, times: Sequence[float]) -> None:
        await self.store.put(self.keys.group(group, "failovers"), json.dumps({"times": list(times)}))

    async def clear_failures(self, group: str, node: str | None = None) -> None:
        """Forget failure marks (of ``node``, or all of them and the failover count)."""
        if node is not None:
            await self.store.delete(self.keys.failure(group, node))
            return
        kvs, _ = await self.store.get_prefix(self.keys.failures(group))
        for kv in kvs:
            await self.store.delete(kv.key)
        await self.store.delete(self.keys.group(group, "failovers"))

    # -- operator requests ----------------------------------------------------------------

    async def set_target(self, group: str, online: bool, *, by: str | None = None) -> None:
        await self._put(self.keys.group(group, "target"), {"online": online}, by=by)

    async def request_move(self, group: str, to: str) -> None:
        await self._put(self.keys.group(group, "move"), {"to": to})

    async def clear_move(self, group: str) -> None:
        await self.store.delete(self.keys.group(group, "move"))

    async def is_suspended(self, group: str, monitor: str) -> bool:
        """Whether the monitor is suspended now (read from the store, not from a snapshot)."""
        return await self.store.get(self.keys.suspend(group, monitor)) is not None

    async def suspend_monitor(self, group: str, monitor: str, on: bool) -> None:
        if on:
            await self._put(self.keys.suspend(group, monitor), {})
        else:
            await self.store.delete(self.keys.suspend(group, monitor))

    # -- status and events ------------------------------------------------------------------

    async def write_status(self, group: str, record: dict[str, Any]) -> None:
        """The status record of ``record["node"]`` (each node has its own key: see ``_layout``)."""
        key = self.keys.status(group, str(record["node"]))
        await self.store.put(key, json.dumps({**record, "at": self.clock.time()}))

    async def record_event(self, group: str | None, kind: str, reason: str, *, node: str | None = None) -> None:
        """Append one event (``kagemusha status`` and the web UI's event list read them)."""
        at = self.clock.time()
        # Strictly increasing per writer: two events in one clock tick must not share a key.
        ns = max(int(at * 1e9), self._last_event_ns + 1)
        self._last_event_ns = ns
        rec = {"at": at, "node": node, "group": group, "kind": kind, "reason": reason, "by": self.by}
        await self.store.put(self.keys.event(ns, self.source), json.dumps(rec))

    async def trim_events(self, keep: int) -> int:
        """Delete all but the newest ``keep`` events; returns how many went."""
        kvs, _ = await self.store.get_prefix(self.keys.events)
        old = kvs[: max(0, len(kvs) - keep)]
        for kv in old:
            await self.store.delete(kv.key)
        return len(old)

    # -- kagemusha build / uninstall ----------------------------------------------------------

    async def is_built(self, node: str) -> bool:
        return await self.store.get(self.keys.built(node)) is not None

    async def mark_built(self, node: str, *, plan: str) -> str:
        """Record that ``build`` finished on ``node``; returns the key (for the build's manifest)."""
        key = self.keys.built(node)
        await self.store.put(key, json.dumps({"node": node, "at": self.clock.time(), "plan": plan}))
        return key

    async def unmark_built(self, node: str) -> bool:
        return await self.store.delete(self.keys.built(node))

    async def built_nodes(self) -> list[str]:
        kvs, _ = await self.store.get_prefix(self.keys.built_prefix)
        return [kv.key.rsplit("/", 1)[-1] for kv in kvs]

    async def delete_cluster(self) -> int:
        """Delete every key of the cluster (``uninstall`` on the last node); returns how many."""
        kvs, _ = await self.store.get_prefix(self.keys.root)
        for kv in kvs:
            await self.store.delete(kv.key)
        return len(kvs)

    # -- the applied config -----------------------------------------------------------------

    async def put_config(self, value: str, *, expected_revision: int) -> bool:
        """Store a config record by compare-and-set (``False``: another apply won)."""
        return await self.store.cas(self.keys.config, value, expected_revision=expected_revision)

    async def _put(self, key: str, data: dict[str, Any], *, by: str | None = None) -> None:
        await self.store.put(key, json.dumps({**data, "by": by or self.by, "at": self.clock.time()}))
