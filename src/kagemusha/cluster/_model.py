"""Data the decision function reads (``ClusterView``) and returns (``Plan``). Frozen, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kagemusha.model import ClpEvent

__all__ = [
    "LIVE_STATES",
    "Action",
    "ActionKind",
    "ClusterView",
    "EventKind",
    "FailureMark",
    "GroupView",
    "LastRun",
    "LocalState",
    "MonitorRequest",
    "OwnerRecord",
    "Plan",
    "RecoveryAction",
]


class LocalState(StrEnum):
    """What this node's agent is doing with a group."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    START_FAILED = "start_failed"
    STOP_FAILED = "stop_failed"
    #: being fenced, or a fence not proven complete yet: the node keeps its claim until it is
    FENCING = "fencing"


#: Local states in which the group's resources may be live on this node.
LIVE_STATES = frozenset({LocalState.RUNNING, LocalState.STARTING, LocalState.STOP_FAILED, LocalState.FENCING})


class EventKind(StrEnum):
    """What the event list records about a group (``events/`` in the store)."""

    START = "start"
    FAILOVER = "failover"
    ONLINE = "online"
    RESTART = "restart"
    STOP = "stop"
    FAILOVER_FROM = "failover_from"
    NODE_UP = "node_up"
    NODE_FENCED = "node_fenced"
    FENCE_INCOMPLETE = "fence_incomplete"


class RecoveryAction(StrEnum):
    NONE = "none"
    RESTART = "restart"
    FAILOVER = "failover"
    FINAL = "final"


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """``groups/<g>/owner``: who runs the group, under that node's lease, and why it started."""

    node: str
    event: ClpEvent = ClpEvent.START
    #: the lease the key is attached to (None when unknown)
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class LastRun:
    """``groups/<g>/last``: the node that ran the group last and whether it let go cleanly.

    ``clean=False`` (it crashed, lost its lease, or failed) makes the next start a ``FAILOVER``.
    """

    node: str
    clean: bool


@dataclass(frozen=True, slots=True)
class FailureMark:
    """The group failed on ``node`` at wall time ``at``; the node is excluded until the mark expires."""

    node: str
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MonitorRequest:
    """A monitor of the group reached its ``retries`` on this node."""

    monitor: str
    reason: str


@dataclass(frozen=True, slots=True)
class GroupView:
    name: str
    owner: OwnerRecord | None = None
    target_online: bool = True
    move_to: str | None = None
    last: LastRun | None = None
    failures: tuple[FailureMark, ...] = ()
    #: wall times of failovers of this group (cluster-wide), for ``failover_limit``.
    failovers: tuple[float, ...] = ()
    local: LocalState = LocalState.STOPPED
    local_reason: str = ""
    #: wall times of restarts on this node, for ``restart_limit``.
    restarts: tuple[float, ...] = ()
    request: MonitorRequest | None = None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One snapshot of everything ``decide`` may look at."""

    node: str
    has_lease: bool
    members: frozenset[str]
    groups: tuple[GroupView, ...] = ()
    standby: frozenset[str] = frozenset()
    leaving: bool = False
    #: wall time this agent joined (got its first lease); for ``startup_wait``.
    joined_at: float = 0.0
    #: this node's current lease id (None when unknown): an owner key of ours under another lease
    #: is from a previous incarnation (before a fence or a restart) and proves nothing.
    lease: int | None = None

    def group(self, name: str) -> GroupView:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


class ActionKind(StrEnum):
    TAKE = "take"                  # compare-and-set the owner key, then start
    START = "start"                # start resources in order (we own it)
    STOP = "stop"                  # stop resources in reverse, then release (and maybe mark failure)
    RESTART = "restart"            # stop and start again on this node
    FENCE_GROUP = "fence_group"    # kill/remove/unmount at once: we run it without owning it
    LEAVE_FENCED = "leave_fenced"  # a stop failed: fence everything, give up the lease, exit
    STOP_AGENT = "stop_agent"      # final action stop_agent: stop every group cleanly and exit


@dataclass(frozen=True, slots=True)
class Action:
    """One complete step: the agent carries it out as it is and decides nothing more.

    ``lease`` is the lease it was decided under: the agent drops a TAKE, START or RESTART whose lease
    is no longer the one it holds (``tests/agent/test_actions_under_lease.py``).
    """

    kind: ActionKind
    group: str | None = None
    event: ClpEvent | None = None
    #: the lease this action was decided under (None: decided without one; only fences and stops)
    lease: int | None = None
    #: the decision's wall time: failure marks, failover and restart times are recorded with it
    at: float = 0.0
    #: what the event list records when the action is carried out
    event_kind: EventKind | None = None
    #: for STOP with ``count_failover``: the group's failover times to store (expired ones dropped, ``at`` added)
    failovers: tuple[float, ...] = ()
    #: for RESTART: this node's restart times to keep (expired ones dropped, ``at`` added)
    restarts: tuple[float, ...] = ()
    #: for TAKE: a one-shot move request is satisfied by this take and is cleared
    clear_move: bool = False
    #: for STOP: released after a planned stop (next start is START) or not (FAILOVER).
    clean: bool = True
    #: for STOP: exclude this node from the group until the mark expires.
    mark_failure: bool = False
    #: for STOP: count a failover against ``failover_limit``.
    count_failover: bool = False
    #: for STOP: set the group's target offline (final action stop_group).
    target_offline: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    #: one line per group that was looked at and why nothing was done, for the log.
    notes: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.actions)
