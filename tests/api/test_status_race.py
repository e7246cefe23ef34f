"""The status of a group shows its owner's record, whatever order the nodes wrote theirs in.

Found in a fresh-clone run: ``node standby n1 --wait 20`` timed out with nothing left on n1. n1 stopped
the group and released it; n2 took it and wrote "running"; then n1's worker, ending, wrote its own
"stopped" over the one shared status key (its snapshot still named it the owner). The status showed
the group "starting" on n2 until n2 wrote again, which without monitors it never did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kagemusha.config import parse_config
from kagemusha.control import derive_status
from kagemusha.model import ClpEvent
from kagemusha.protocol import ClusterRecords
from kagemusha.store import Store
from kagemusha.testing import MemoryBackend, MemoryStore

NODES = ("n1", "n2")
CONFIG = parse_config({
    "cluster": {"name": "race", "store": "local:/nonexistent/store.db"},
    "nodes": [{"name": n, "address": f"127.0.0.1:{7710 + i}"} for i, n in enumerate(NODES, 1)],
    "groups": [{"name": "g1", "nodes": list(NODES),
                "resources": [{"name": "exec1", "type": "exec", "start": "/bin/true", "stop": "/bin/true"}]}],
})


def record(node: str, local: str, reason: str = "") -> dict[str, Any]:
    state = "online" if local == "running" else "stopped"
    return {"node": node, "local": local, "reason": reason, "event": "START", "resources": {"exec1": state},
            "monitors": {}}


def group_status(writes: Callable[[Store, dict[str, ClusterRecords]], Awaitable[None]]) -> dict[str, Any]:
    """The group's status after ``writes`` (each node's records writer, by node) on a fresh store."""

    async def scenario() -> dict[str, Any]:
        store = MemoryStore(MemoryBackend())
        recs = {n: ClusterRecords(store, "race", by=f"agent {n}", source=n) for n in NODES}
        await writes(store, recs)
        return derive_status(CONFIG, await recs["n1"].snapshot(), time.time())["groups"][0]  # type: ignore[no-any-return]

    return asyncio.run(scenario())


def test_a_late_status_of_the_node_that_let_go_does_not_hide_the_new_owners() -> None:
    async def writes(store: Store, rec: dict[str, ClusterRecords]) -> None:
        lease = await store.grant_lease(30.0)
        await rec["n2"].join("n2", lease=lease.id, address="127.0.0.1:7712", pid=1)
        assert await rec["n2"].take("g1", "n2", event=ClpEvent.START, lease=lease.id)
        await rec["n2"].write_status("g1", record("n2", "running"))
        await rec["n1"].write_status("g1", record("n1", "stopped"))  # late: n1's worker ending after its release

    g = group_status(writes)
    assert (g["node"], g["state"], g["resources"][0]["state"]) == ("n2", "online", "online")


def test_without_an_owner_the_newest_record_tells_why() -> None:
    async def writes(store: Store, rec: dict[str, ClusterRecords]) -> None:
        await rec["n1"].write_status("g1", record("n1", "stopped"))
        await rec["n2"].write_status("g1", record("n2", "start_failed", "exec1: exit 3"))
        await rec["n2"].set_target("g1", False)

    g = group_status(writes)
    assert (g["node"], g["state"], g["reason"]) == (None, "failed", "exec1: exit 3")
