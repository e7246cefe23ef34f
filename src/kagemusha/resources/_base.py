"""The resource driver contract (OCF semantics).

Duties: ``start`` brings the resource up and returns only when it is up;
``stop`` brings it down and leaves nothing behind; ``probe`` says what is true
now. ``start`` on a started resource succeeds; ``stop`` on a stopped one
succeeds. ``probe`` answers ``STOPPED`` only when sure: a wrong "stopped" is
how split brain starts. ``fence`` is the emergency stop used when the node can
no longer prove it owns the group: no scripts, no waiting, kill/remove/unmount
in milliseconds.

Timeouts are owned by the caller (``asyncio.timeout`` at the call site). A
driver must leave nothing running when its ``start``/``stop`` is cancelled: the
exec driver kills the script's whole process tree, for example.

Errors: ``NotConfigured`` (parameters cannot work anywhere), ``NotInstalled``
(this node lacks something), ``ResourceFailed`` (recover), ``ResourceTimeout``.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from kagemusha.model import ClpDisk, ClpEvent, ClpServer, StartEnv

__all__ = [
    "ClpDisk",
    "ClpEvent",
    "ClpServer",
    "DriverParams",
    "Probe",
    "ProbeState",
    "Resource",
    "ResourceContext",
    "StartEnv",
]


class ProbeState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Probe:
    """What ``probe`` found. ``reason`` says why for ``FAILED`` (and may add detail otherwise)."""

    state: ProbeState
    reason: str = ""

    @classmethod
    def running(cls, reason: str = "") -> Probe:
        return cls(ProbeState.RUNNING, reason)

    @classmethod
    def stopped(cls, reason: str = "") -> Probe:
        return cls(ProbeState.STOPPED, reason)

    @classmethod
    def failed(cls, reason: str) -> Probe:
        return cls(ProbeState.FAILED, reason)


@dataclass(frozen=True, slots=True)
class ResourceContext:
    """Where a resource runs: names for tagging and logging, and a private state directory."""

    cluster: str
    group: str
    resource: str
    node: str
    state_dir: Path
    cluster_id: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kagemusha.resource"))
    #: Directory relative paths in the resource's parameters resolve against (the config file's).
    base_dir: Path | None = None
    #: The node's environment from ``[[nodes]] env`` (e.g. ``KAGEMUSHA_DOMAIN_REGISTRY``).
    env: dict[str, str] = field(default_factory=dict)

    def tag_env(self) -> dict[str, str]:
        """Environment that marks every process started for this resource (used to find and fence them)."""
        return {
            # NB: never empty: a match on an empty id would be a match on group/resource/node alone, and
            # kill another cluster's processes of the same names (found by the fault campaign).
            "KAGEMUSHA_CLUSTER_ID": self.cluster_id or "-",
            "KAGEMUSHA_GROUP": self.group,
            "KAGEMUSHA_RESOURCE": self.resource,
            "KAGEMUSHA_NODE": self.node,
        }


#: Why an inline ``password`` key is refused, for every driver (``config validate`` says it for any table).
INLINE_PASSWORD = ("an inline password is refused: `config apply` stores this file's text in the cluster store and "
                   "`config show --toml`/`config diff` print it; write the password to a file only its owner may "
                   "read (chmod 600) and name it with password_file")


class DriverParams(BaseModel):
    """Base of every driver's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Resource(abc.ABC):
    """One resource of a failover group on one node."""

    type_name: ClassVar[str]
    Params: ClassVar[type[DriverParams]] = DriverParams
    default_start_timeout: ClassVar[float] = 60.0
    default_stop_timeout: ClassVar[float] = 60.0
    #: True for switchover-disk resources: their start result feeds ``CLP_DISK``.
    is_disk: ClassVar[bool] = False
    #: True for a resource that uses none of its group's other resources (an address, a mount): the
    #: group starts consecutive such resources together, and stops them together. False (scripts,
    #: domains) means "may use anything listed before it": it starts after all of those have started,
    #: and stops before any of them stops. The group's order in ``cluster.toml`` is its dependency order.
    independent: ClassVar[bool] = False

    def __init__(self, params: DriverParams, ctx: ResourceContext) -> None:
        self.params = params
        self.ctx = ctx

    @abc.abstractmethod
    async def start(self, env: StartEnv) -> None:
        """Bring the resource up. Idempotent.

        Raises:
            NotConfigured, NotInstalled, ResourceFailed.
        """

    @abc.abstractmethod
    async def stop(self, env: StartEnv) -> None:
        """Bring the resource down, leaving nothing behind. Idempotent.

        Raises:
            ResourceFailed: it could not be stopped (the node must fence itself).
        """

    @abc.abstractmethod
    async def probe(self) -> Probe:
        """Say whether the resource runs here. ``STOPPED`` only when sure."""

    async def fence(self) -> None:
        """Emergency stop without scripts or waiting. Default: nothing to do."""

    def needs(self, earlier: Resource) -> bool:
        """Whether this ``independent`` resource still needs ``earlier`` (listed before it) up first.

        Default: no. A disk mounted inside another disk's mount point needs that one (``Disk``).
        """
        return False

    @classmethod
    def check_params(cls, params: DriverParams, *, base_dir: Path | None = None) -> list[tuple[str, str]]:
        """Checks beyond the schema that need the file system (e.g. a script exists).

        Returns ``(key, message)`` pairs; empty when fine.
        """
        return []
