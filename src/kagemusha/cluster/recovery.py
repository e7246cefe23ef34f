"""The shared monitor recovery chain (CLUSTERPRO's): restart, then failover, then the final action.

Pure: counts in, action out. Counts are of events inside ``cluster.failure_expiry``.
"""

from __future__ import annotations

from kagemusha.cluster._model import RecoveryAction
from kagemusha.config import MonitorSpec

__all__ = ["next_recovery", "recent"]


def recent(times: tuple[float, ...], now: float, expiry: float) -> int:
    """How many of ``times`` fall inside the last ``expiry`` seconds (fail counts expire)."""
    return sum(1 for t in times if now - t < expiry)


def next_recovery(monitor: MonitorSpec, *, restarts: int, failovers: int) -> RecoveryAction:
    """What to do when ``monitor`` has failed ``retries`` times in a row.

    Args:
        monitor: the monitor's policy.
        restarts: restarts of the group on this node not yet expired.
        failovers: failovers of the group in the cluster not yet expired.
    """
    if restarts < monitor.restart_limit:
        return RecoveryAction.RESTART
    if failovers < monitor.failover_limit:
        return RecoveryAction.FAILOVER
    return RecoveryAction.FINAL
