"""The store layout, and the pure parse of a store snapshot into what ``decide`` and ``status`` read.

Every key string of the cluster lives in this module (``Keys``); ``_records.py`` writes them,
``parse_snapshot`` reads them. Nothing else in kagemusha spells a key.

Keys (under ``/kagemusha/<cluster>/``)::

    members/<node>               lease   {"address", "pid", "since"}           membership
    standby/<node>                       {"by", "at"}                          drained node
    config                               {"version", "toml", "sha256", ...}    the applied config
    groups/<g>/owner             lease   {"node", "event", "since"}            the one owner
    groups/<g>/target                    {"online", "by", "at"}                group start/stop
    groups/<g>/move                      {"to", "by", "at"}                    one-shot move
    groups/<g>/last                      {"node", "clean", "at", "reason"}     FAILOVER vs START
    groups/<g>/failures/<node>           {"at", "reason"}                      node exclusion
    groups/<g>/failovers                 {"times": [...]}                      failover_limit
    groups/<g>/status/<node>             {"node", "local", "resources", "monitors", "reason", "at"}
                                                                           each node's own (*)
    suspend/<g>/<monitor>                {"by", "at"}                          monitor suspended
    events/<time_ns>-<node>              {"at", "node", "group", "kind", "reason", "by"}
    procedure/built/<node>               {"node", "at", "plan"}                `kagemusha build` done

(*) One status key per node, never shared: a node that lets a group go writes its last word
("stopped") after its release, when the next owner may already have written "running"; on one
shared key the late word hid the owner's (the group showed "starting" until the owner wrote again).
The group's status is its owner's record; without an owner, the newest one (which says why).
A ``groups/<g>/status`` key of an older version is read as its node's record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kagemusha.cluster import FailureMark, GroupView, LastRun, OwnerRecord
from kagemusha.model import ClpEvent
from kagemusha.store import KeyValue

__all__ = ["GroupRecords", "Keys", "Snapshot", "parse_snapshot", "root_of"]


def root_of(cluster: str) -> str:
    return f"/kagemusha/{cluster}/"


class Keys:
    """The keys of one cluster. The only place key strings are spelled."""

    def __init__(self, cluster: str) -> None:
        self.root = root_of(cluster)

    @property
    def config(self) -> str:
        return self.root + "config"

    def member(self, node: str) -> str:
        return f"{self.root}members/{node}"

    def standby(self, node: str) -> str:
        return f"{self.root}standby/{node}"

    def suspend(self, group: str, monitor: str) -> str:
        return f"{self.root}suspend/{group}/{monitor}"

    @property
    def events(self) -> str:
        return self.root + "events/"

    def event(self, at_ns: int, source: str) -> str:
        return f"{self.root}events/{at_ns:020d}-{source}"

    def group(self, group: str, what: str) -> str:
        """``owner``, ``target``, ``move``, ``last``, ``failovers``."""
        return f"{self.root}groups/{group}/{what}"

    def status(self, group: str, node: str) -> str:
        return f"{self.root}groups/{group}/status/{node}"

    def failures(self, group: str) -> str:
        return f"{self.root}groups/{group}/failures/"

    def failure(self, group: str, node: str) -> str:
        return f"{self.root}groups/{group}/failures/{node}"

    @property
    def built_prefix(self) -> str:
        return self.root + "procedure/built/"

    def built(self, node: str) -> str:
        """``kagemusha build`` finished on ``node`` (so ``uninstall`` knows the last node)."""
        return f"{self.root}procedure/built/{node}"


def _json(kv: KeyValue) -> dict[str, Any]:
    try:
        data = json.loads(kv.value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class GroupRecords:
    owner: OwnerRecord | None = None
    owner_revision: int = 0
    owner_since: float = 0.0
    target_online: bool | None = None
    move_to: str | None = None
    move_revision: int = 0
    last: LastRun | None = None
    failures: list[FailureMark] = field(default_factory=list)
    failovers: list[float] = field(default_factory=list)
    #: each node's own status record of the group, by node
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def status(self) -> dict[str, Any]:
        """The owner's status record; without an owner the newest one; ``{}`` when there is none."""
        if self.owner is not None:
            return self.statuses.get(self.owner.node, {})
        return max(self.statuses.values(), key=_at, default={})

    def view(self, name: str, autostart: bool) -> GroupView:
        return GroupView(
            name=name,
            owner=self.owner,
            target_online=autostart if self.target_online is None else self.target_online,
            move_to=self.move_to,
            last=self.last,
            failures=tuple(self.failures),
            failovers=tuple(self.failovers),
        )


@dataclass
class Snapshot:
    revision: int = 0
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the lease each member key is attached to
    member_leases: dict[str, int | None] = field(default_factory=dict)
    standby: set[str] = field(default_factory=set)
    groups: dict[str, GroupRecords] = field(default_factory=dict)
    suspended: set[tuple[str, str]] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None

    def group(self, name: str) -> GroupRecords:
        return self.groups.setdefault(name, GroupRecords())


def _at(record: dict[str, Any]) -> float:
    at = record.get("at")
    return float(at) if isinstance(at, (int, float)) else 0.0


def parse_snapshot(kvs: list[KeyValue], revision: int, root: str) -> Snapshot:
    """Turn the keys under ``root`` into a ``Snapshot``. Unparseable values are ignored, never fatal."""
    snap = Snapshot(revision=revision)
    for kv in kvs:
        rel = kv.key.removeprefix(root)
        parts = rel.split("/")
        data = _json(kv)
        if parts[0] == "members" and len(parts) == 2:
            snap.members[parts[1]] = data
            snap.member_leases[parts[1]] = kv.lease
        elif parts[0] == "standby" and len(parts) == 2:
            snap.standby.add(parts[1])
        elif parts[0] == "suspend" and len(parts) == 3:
            snap.suspended.add((parts[1], parts[2]))
        elif parts[0] == "events" and len(parts) == 2:
            snap.events.append(data)
        elif parts[0] == "config" and len(parts) == 1:
            snap.config = data
        elif parts[0] == "groups" and len(parts) >= 3:
            g = snap.group(parts[1])
            what = parts[2]
            if what == "owner" and isinstance(data.get("node"), str):
                try:
                    event = ClpEvent(data.get("event", "START"))
                except ValueError:
                    event = ClpEvent.START
                g.owner = OwnerRecord(node=data["node"], event=event, lease=kv.lease)
                g.owner_revision = kv.mod_revision
                g.owner_since = float(data.get("since", 0.0))
            elif what == "target":
                g.target_online = bool(data.get("online", True))
            elif what == "move" and isinstance(data.get("to"), str):
                g.move_to = data["to"]
                g.move_revision = kv.mod_revision
            elif what == "last" and isinstance(data.get("node"), str):
                g.last = LastRun(node=data["node"], clean=bool(data.get("clean", False)))
            elif what == "failures" and len(parts) == 4:
                g.failures.append(FailureMark(node=parts[3], at=float(data.get("at", 0.0)), reason=str(data.get("reason", ""))))
            elif what == "failovers":
                g.failovers = [float(t) for t in data.get("times", []) if isinstance(t, (int, float))]
            elif what == "status" and len(parts) == 4:
                g.statuses[parts[3]] = data
            elif what == "status" and len(parts) == 3 and isinstance(data.get("node"), str):
                g.statuses.setdefault(data["node"], data)  # NB: an older version's one shared key
    snap.events.sort(key=lambda e: e.get("at", 0.0))
    return snap
