"""The pure cluster core: views, plans, the decision function and the recovery chain."""

from kagemusha.cluster._model import (
    LIVE_STATES,
    Action,
    ActionKind,
    ClusterView,
    EventKind,
    FailureMark,
    GroupView,
    LastRun,
    LocalState,
    MonitorRequest,
    OwnerRecord,
    Plan,
    RecoveryAction,
)
from kagemusha.cluster.decide import decide, eligible_nodes, placement
from kagemusha.cluster.recovery import next_recovery, recent

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
    "decide",
    "eligible_nodes",
    "next_recovery",
    "placement",
    "recent",
]
