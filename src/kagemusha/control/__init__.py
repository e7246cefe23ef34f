"""The service behind every operator action: status, group start/stop/move, monitor suspend, node standby.

Used by the CLI and handed to the API by whoever builds it (the agent); it never loads the agent.

NB: the names are imported when first used (PEP 562): ``kagemusha status`` on the store needs
``ClusterControl`` only, not the config-apply code nor the node statistics (issue 12, CLI cold start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kagemusha._lazy import lazy_names

if TYPE_CHECKING:
    from kagemusha.control._config import apply_config, changes_from, read_stored_config
    from kagemusha.control._node import GroupStatistics, MonitorStatistics, NodeState, NodeStatistics
    from kagemusha.control._service import ActionFailed, ClusterControl, UnknownName, UsageError
    from kagemusha.control._status import derive_status

_WHERE = {
    **dict.fromkeys(("apply_config", "changes_from", "read_stored_config"), "_config"),
    **dict.fromkeys(("GroupStatistics", "MonitorStatistics", "NodeState", "NodeStatistics"), "_node"),
    **dict.fromkeys(("ActionFailed", "ClusterControl", "UnknownName", "UsageError"), "_service"),
    "derive_status": "_status",
}


__getattr__ = lazy_names(__name__, _WHERE, globals())


__all__ = [
    "ActionFailed",
    "ClusterControl",
    "GroupStatistics",
    "MonitorStatistics",
    "NodeState",
    "NodeStatistics",
    "UnknownName",
    "UsageError",
    "apply_config",
    "changes_from",
    "derive_status",
    "read_stored_config",
]
