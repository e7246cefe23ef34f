"""The service behind every operator action: status, group start/stop/move, monitor suspend, node standby.

Used by the CLI and handed to the API by whoever builds it (the agent); it never loads the agent.
"""

from kagemusha.control._config import apply_config, changes_from, read_stored_config
from kagemusha.control._node import GroupStatistics, MonitorStatistics, NodeState, NodeStatistics
from kagemusha.control._service import ActionFailed, ClusterControl, UnknownName, UsageError
from kagemusha.control._status import derive_status

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
