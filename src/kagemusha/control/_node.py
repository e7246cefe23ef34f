"""What the API and the metrics may read of the node that serves them: a protocol the agent fulfils.

The API never imports the agent: whoever builds the API hands it an object of this shape and a
control service (``kagemusha.agent`` does; tests hand a stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kagemusha.config import Config
from kagemusha.protocol import Snapshot

__all__ = ["GroupStatistics", "MonitorStatistics", "NodeState", "NodeStatistics"]


@dataclass(frozen=True, slots=True)
class MonitorStatistics:
    name: str
    failures: int
    consecutive: int
    ok: bool | None


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    name: str
    #: the group's local state on this node (``running``, ``stopped``, ``fencing``, ...)
    local: str
    starts: int = 0
    failovers: int = 0
    restarts: int = 0
    last_start_seconds: float = 0.0
    last_failover_seconds: float = 0.0
    monitors: tuple[MonitorStatistics, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """A frozen snapshot of one agent's counters (``Agent.statistics()``)."""

    node: str
    member: bool
    fenced_reason: str = ""
    #: groups whose fence is not proven complete yet (the node keeps its claim, see docs/fencing.md)
    fence_incomplete: tuple[str, ...] = ()
    lease_renew_seconds: float = 0.0
    store_request_seconds: float = 0.0
    fences: int = 0
    groups: tuple[GroupStatistics, ...] = ()


class NodeState(Protocol):
    """The serving node, read live (its config changes when a new one is applied: never cache it)."""

    @property
    def node(self) -> str: ...

    @property
    def config(self) -> Config: ...

    @property
    def snapshot(self) -> Snapshot: ...

    def is_member(self) -> bool:
        """True while the node holds its lease."""

    def runs(self, group: str) -> bool:
        """True while ``group`` is online on this node under this node's ownership."""

    def statistics(self) -> NodeStatistics: ...
