"""Types that both the failover decision and the resource drivers need, in a module of their own.

``cluster/`` (the pure decision) and ``resources/`` (the drivers) both import from here, so neither
imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ClpDisk", "ClpEvent", "ClpServer", "StartEnv"]


class ClpEvent(StrEnum):
    """``CLP_EVENT`` as CLUSTERPRO's scripts see it."""

    START = "START"
    FAILOVER = "FAILOVER"


class ClpServer(StrEnum):
    """``CLP_SERVER``: ``HOME`` on the group's first node, ``OTHER`` elsewhere."""

    HOME = "HOME"
    OTHER = "OTHER"


class ClpDisk(StrEnum):
    """``CLP_DISK``: ``FAILURE`` when a disk resource of the group failed to come up."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


@dataclass(frozen=True, slots=True)
class StartEnv:
    """Why the group is being started (or stopped): what CLUSTERPRO scripts read."""

    event: ClpEvent = ClpEvent.START
    server: ClpServer = ClpServer.HOME
    disk: ClpDisk = ClpDisk.SUCCESS
