"""Cluster control through the store: what ``kagemusha status/group/node/monitor`` and the REST API do.

Every action is a write to the store that the agents act on, so any node can
take it and it works while a node is down. ``status()`` derives each group's
state from the owner key (under the owner's lease) and the status record its
node writes, so a crashed node's stale record never shows as online.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from kagemusha.agent._layout import Snapshot, parse_snapshot, root_of
from kagemusha.cluster import GroupView
from kagemusha.cluster.decide import eligible_nodes
from kagemusha.cluster._model import ClusterView
from kagemusha.config import Config
from kagemusha.errors import KagemushaError
from kagemusha.store import Store, open_cluster_store

__all__ = ["ClusterControl", "ActionFailed", "UsageError", "derive_status"]

# The owner's local state while it still holds the group. A failed start is being released
# (and may fail over), so it shows as stopping; "failed" is for a group nobody can run.
_LOCAL_TO_STATE = {
    "starting": "starting",
    "running": "online",
    "stopping": "stopping",
    "start_failed": "stopping",
    "stop_failed": "failed",
    "stopped": "stopping",
}


class ActionFailed(KagemushaError):
    """The requested action did not happen in time; the message says what the cluster shows instead."""


class UsageError(KagemushaError):
    """The request names something that does not exist or cannot be (exit 2)."""


def derive_status(config: Config, snap: Snapshot, now: float) -> dict[str, Any]:
    """The cluster as ``kagemusha status --json`` prints it. Pure."""
    nodes = []
    for n in config.nodes:
        state = "up" if n.name in snap.members else "down"
        entry: dict[str, Any] = {"name": n.name, "state": state, "address": n.address}
        entry["standby"] = n.name in snap.standby
        nodes.append(entry)
    groups = []
    view = ClusterView(node="", has_lease=False, members=frozenset(snap.members), standby=frozenset(snap.standby))
    for g in config.groups:
        rec = snap.group(g.name)
        st = rec.status or {}
        reason = ""
        if rec.owner is not None:
            node: str | None = rec.owner.node
            if st.get("node") == node:
                state = _LOCAL_TO_STATE.get(str(st.get("local")), "starting")
                reason = str(st.get("reason", ""))
            else:
                state = "starting"
        else:
            node = None
            gv: GroupView = rec.view(g.name, g.autostart)
            if not gv.target_online:
                state = "offline"
                if st.get("local") in ("start_failed", "stop_failed"):
                    state, reason = "failed", str(st.get("reason", ""))
            elif not eligible_nodes(view, g, gv, now, config.cluster.failure_expiry):
                alive = [n for n in g.nodes if n in snap.members]
                if alive and rec.failures:
                    latest = max(rec.failures, key=lambda f: f.at)
                    state, reason = "failed", f"failed on {', '.join(sorted({f.node for f in rec.failures}))}: {latest.reason}"
                else:
                    state, reason = "offline", "no node of the group is up" if not alive else "no eligible node"
            else:
                state = "offline"
        res_states = st.get("resources", {}) if (node is not None and st.get("node") == node) else {}
        resources = [{"name": r.name, "type": r.type, "state": str(res_states.get(r.name, "stopped"))} for r in g.resources]
        mon_states = st.get("monitors", {}) if (node is not None and st.get("node") == node) else {}
        monitors = []
        for m in g.monitors:
            ms = mon_states.get(m.name, {})
            monitors.append({
                "name": m.name, "type": m.type,
                "last": ms.get("last"), "detail": ms.get("detail", ""),
                "fail_count": ms.get("fail_count", 0), "failures": ms.get("failures", 0),
                "suspended": (g.name, m.name) in snap.suspended,
            })
        groups.append({
            "name": g.name, "state": state, "node": node, "reason": reason,
            "home": g.home, "failback": g.failback.value,
            "resources": resources, "monitors": monitors,
        })
    return {"cluster": config.cluster.name, "nodes": nodes, "groups": groups}


@dataclass
class ClusterControl:
    """Read and steer a cluster through its store.

    Usage::

        async with ClusterControl.open(config) as ctl:
            print(await ctl.status())
            await ctl.move("webotx1", "n2", wait=60)
    """

    config: Config
    store: Store
    by: str = "cli"

    @classmethod
    def open(cls, config: Config, *, by: str = "cli") -> ClusterControl:
        from pathlib import Path

        base = str(Path(config.source).resolve().parent) if config.source else None
        return cls(config, open_cluster_store(config.cluster, base_dir=base, timeout=max(config.cluster.store_timeout, 2.0)), by)

    async def __aenter__(self) -> ClusterControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    @property
    def root(self) -> str:
        return root_of(self.config.cluster.name)

    async def snapshot(self) -> Snapshot:
        kvs, rev = await self.store.get_prefix(self.root)
        return parse_snapshot(kvs, rev, self.root)

    async def status(self) -> dict[str, Any]:
        return derive_status(self.config, await self.snapshot(), time.time())

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        return (await self.snapshot()).events[-limit:]

    def _group(self, name: str) -> Any:
        try:
            return self.config.group(name)
        except KeyError:
            raise UsageError(f'no group "{name}" (groups: {", ".join(g.name for g in self.config.groups) or "none"})') from None

    def _node(self, name: str) -> None:
        if name not in self.config.node_names:
            raise UsageError(f'no node "{name}" (nodes: {", ".join(self.config.node_names)})')

    async def _put(self, rel: str, data: dict[str, Any]) -> None:
        await self.store.put(self.root + rel, json.dumps({**data, "by": self.by, "at": time.time()}))

    async def audit(self, group: str | None, kind: str, reason: str) -> None:
        await self.store.put(
            self.root + f"events/{time.time_ns():020d}-ctl",
            json.dumps({"at": time.time(), "node": None, "group": group, "kind": kind, "reason": reason, "by": self.by}),
        )

    async def _clear_failures(self, group: str) -> None:
        kvs, _ = await self.store.get_prefix(self.root + f"groups/{group}/failures/")
        for kv in kvs:
            await self.store.delete(kv.key)
        await self.store.delete(self.root + f"groups/{group}/failovers")

    async def start_group(self, group: str, node: str | None = None, *, wait: float = 120.0) -> dict[str, Any]:
        spec = self._group(group)
        if node is not None:
            self._node(node)
            if node not in spec.nodes:
                raise UsageError(f'node "{node}" is not one of group {group}\'s nodes ({", ".join(spec.nodes)})')
        await self._clear_failures(group)
        if node is not None:
            await self._put(f"groups/{group}/move", {"to": node})
        await self._put(f"groups/{group}/target", {"online": True})
        await self.audit(group, "start_requested", f"group start{' on ' + node if node else ''}")
        return await self.wait_group(group, lambda g: g["state"] == "online" and (node is None or g["node"] == node),
                                     wait, f"online{' on ' + node if node else ''}")

    async def stop_group(self, group: str, *, wait: float = 120.0) -> dict[str, Any]:
        self._group(group)
        await self._put(f"groups/{group}/target", {"online": False})
        await self.audit(group, "stop_requested", "group stop")
        return await self.wait_group(group, lambda g: g["state"] in ("offline", "failed") and g["node"] is None, wait, "offline")

    async def move_group(self, group: str, to: str, *, wait: float = 120.0) -> dict[str, Any]:
        spec = self._group(group)
        self._node(to)
        if to not in spec.nodes:
            raise UsageError(f'node "{to}" is not one of group {group}\'s nodes ({", ".join(spec.nodes)})')
        snap = await self.snapshot()
        if to not in snap.members:
            raise ActionFailed(f"cannot move {group} to {to}: node {to} is down")
        if to in snap.standby:
            raise ActionFailed(f"cannot move {group} to {to}: node {to} is in standby")
        failed_there = [f for f in snap.group(group).failures if f.node == to]
        if failed_there:
            await self.store.delete(self.root + f"groups/{group}/failures/{to}")
        await self._put(f"groups/{group}/move", {"to": to})
        await self.audit(group, "move_requested", f"group move to {to}")
        return await self.wait_group(group, lambda g: g["state"] == "online" and g["node"] == to, wait, f"online on {to}")

    async def set_standby(self, node: str, on: bool, *, wait: float = 120.0) -> dict[str, Any]:
        self._node(node)
        if on:
            await self._put(f"standby/{node}", {})
        else:
            await self.store.delete(self.root + f"standby/{node}")
        await self.audit(None, "standby" if on else "unstandby", f"node {node} {'standby' if on else 'unstandby'}")
        if not on:
            return await self.status()
        deadline = time.monotonic() + wait
        while True:
            st = await self.status()
            if not any(g["node"] == node for g in st["groups"]):
                return st
            if time.monotonic() > deadline:
                raise ActionFailed(f"node {node} still runs {[g['name'] for g in st['groups'] if g['node'] == node]} after {wait:g}s")
            await asyncio.sleep(0.1)

    async def suspend_monitor(self, group: str, monitor: str, on: bool) -> None:
        spec = self._group(group)
        if monitor not in [m.name for m in spec.monitors]:
            raise UsageError(f'group {group} has no monitor "{monitor}"')
        if on:
            await self._put(f"suspend/{group}/{monitor}", {})
        else:
            await self.store.delete(self.root + f"suspend/{group}/{monitor}")
        await self.audit(group, "monitor_suspend" if on else "monitor_resume", f"monitor {monitor}")

    async def wait_group(self, group: str, ok: Any, wait: float, want: str) -> dict[str, Any]:
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


async def read_stored_config(store: Store, cluster: str) -> Any:
    """The applied config record, or ``None`` when none was applied."""
    from kagemusha.config._stored import StoredConfig, config_key

    kv = await store.get(config_key(cluster))
    if kv is None:
        return None
    try:
        return StoredConfig.from_value(kv.value, kv.mod_revision)
    except (ValueError, KeyError, TypeError) as exc:
        raise ActionFailed(f"the stored config record is unreadable: {exc}") from None


def changes_from(stored: Any, new: Config, path: str) -> list[str]:
    """What storing ``new`` (read from ``path``) over the ``stored`` record changes, one line each."""
    from kagemusha.config._stored import parse_stored, summarize_diff
    from kagemusha.errors import ConfigError

    old = None
    if stored is not None:
        try:
            old = parse_stored(stored, local_path=path)
        except ConfigError:  # the stored text is not valid here (e.g. a script missing): compare as new
            old = None
    return summarize_diff(old, new)


async def apply_config(store: Store, path: str, *, by: str = "cli") -> tuple[Any, list[str]]:
    """Validate ``path`` and store it as the next version. Returns (record, change summary).

    Raises:
        ConfigError: the file is invalid; nothing is stored.
        ActionFailed: another apply won the race (retry).
    """
    from kagemusha.config._stored import StoredConfig, config_key, load_text

    cfg, text = load_text(path)
    cur = await read_stored_config(store, cfg.cluster.name)
    if cur is not None and cur.sha256 == StoredConfig.new(text, 0, by).sha256:
        return cur, ["no change: already applied"]
    summary = changes_from(cur, cfg, path)
    rec = StoredConfig.new(text, (cur.version if cur else 0) + 1, by)
    ok = await store.cas(config_key(cfg.cluster.name), rec.to_value(), expected_revision=cur.revision if cur else 0)
    if not ok:
        raise ActionFailed("another apply changed the config at the same time; run apply again")
    await store.put(
        root_of(cfg.cluster.name) + f"events/{time.time_ns():020d}-ctl",
        json.dumps({"at": time.time(), "node": None, "group": None, "kind": "config_applied",
                    "reason": f"config version {rec.version}: " + "; ".join(summary), "by": by}),
    )
    return rec, summary
