"""``derive_status``: the cluster as ``kagemusha status`` shows it, from a snapshot. Pure."""

from __future__ import annotations

from typing import Any

from kagemusha.cluster import ClusterView, GroupView
from kagemusha.cluster.decide import eligible_nodes
from kagemusha.config import Config
from kagemusha.protocol import Snapshot

__all__ = ["derive_status"]

# The owner's local state while it still holds the group. A failed start is being released
# (and may fail over), so it shows as stopping; "failed" is for a group nobody can run.
_LOCAL_TO_STATE = {
    "starting": "starting",
    "running": "online",
    "stopping": "stopping",
    "start_failed": "stopping",
    "stop_failed": "failed",
    "stopped": "stopping",
    "fencing": "failed",
}


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
