"""The status of a group shows its owner's record, whatever order the nodes wrote theirs in.

Found in a fresh-clone run: ``node standby n1 --wait 20`` timed out with nothing left on n1. n1 stopped
the group and released it; n2 took it and wrote "running"; then n1's worker, ending, wrote its own
"stopped" over the one shared status key (its snapshot still named it the owner). The status showed
the group "starting" on n2 until n2 wrote again, which without monitors it never did.
"""

from __future__ import annotations

import asyncio
import time
import tomllib

from kagemusha.config import parse_config
from kagemusha.control import derive_status
from kagemusha.model import ClpEvent
from kagemusha.protocol import ClusterRecords
from kagemusha.testing import MemoryBackend, MemoryStore

TOML = """
[cluster]
name = "race"
store = "local:/nonexistent/store.db"
[[nodes]]
name = "n1"
address = "127.0.0.1:7711"
[[nodes]]
name = "n2"
address = "127.0.0.1:7712"
[[groups]]
name = "g1"
nodes = ["n1", "n2"]
[[groups.resources]]
name = "exec1"
type = "exec"
start = "/bin/true"
stop = "/bin/true"
"""


def record(node: str, local: str) -> dict[str, object]:
    state = "online" if local == "running" else "stopped"
    return {"node": node, "local": local, "reason": "", "event": "START", "resources": {"exec1": state}, "monitors": {}}


def test_a_late_status_of_the_node_that_let_go_does_not_hide_the_new_owners() -> None:
    cfg = parse_config(tomllib.loads(TOML))

    async def scenario() -> dict[str, object]:
        store = MemoryStore(MemoryBackend())
        n1 = ClusterRecords(store, "race", by="agent n1", source="n1")
        n2 = ClusterRecords(store, "race", by="agent n2", source="n2")
        lease = await store.grant_lease(30.0)
        await n2.join("n2", lease=lease.id, address="127.0.0.1:7712", pid=1)
        assert await n2.take("g1", "n2", event=ClpEvent.START, lease=lease.id)
        await n2.write_status("g1", record("n2", "running"))
        await n1.write_status("g1", record("n1", "stopped"))  # late: n1's worker ending after its release
        return derive_status(cfg, await n1.snapshot(), time.time())

    g = asyncio.run(scenario())["groups"][0]  # type: ignore[index]
    assert (g["node"], g["state"], g["resources"][0]["state"]) == ("n2", "online", "online")


def test_without_an_owner_the_newest_record_tells_why() -> None:
    cfg = parse_config(tomllib.loads(TOML))

    async def scenario() -> dict[str, object]:
        store = MemoryStore(MemoryBackend())
        n1 = ClusterRecords(store, "race", by="agent n1", source="n1")
        n2 = ClusterRecords(store, "race", by="agent n2", source="n2")
        await n1.write_status("g1", record("n1", "stopped"))
        await n2.write_status("g1", {**record("n2", "start_failed"), "reason": "exec1: exit 3"})
        await n2.set_target("g1", False)
        return derive_status(cfg, await n1.snapshot(), time.time())

    g = asyncio.run(scenario())["groups"][0]  # type: ignore[index]
    assert (g["node"], g["state"], g["reason"]) == (None, "failed", "exec1: exit 3")
