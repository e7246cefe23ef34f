"""The monitor contract: one ``check`` that says healthy or not, and why.

The caller owns the timeout (a check that hangs counts as failed at the
monitor's ``timeout``) and the recovery policy (shared code in
``kagemusha.cluster.recovery``, not per monitor).
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from kagemusha.resources._base import DriverParams

__all__ = ["CheckResult", "Monitor", "MonitorContext"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MonitorContext:
    cluster: str
    group: str
    monitor: str
    node: str
    state_dir: Path
    cluster_id: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kagemusha.monitor"))
    #: Directory relative paths in the monitor's parameters resolve against (the config file's).
    base_dir: Path | None = None
    #: The node's environment from ``[[nodes]] env`` (e.g. ``KAGEMUSHA_DOMAIN_REGISTRY``).
    env: dict[str, str] = field(default_factory=dict)


class Monitor(abc.ABC):
    """Watches one aspect of a running group."""

    type_name: ClassVar[str]
    Params: ClassVar[type[DriverParams]] = DriverParams

    def __init__(self, params: DriverParams, ctx: MonitorContext) -> None:
        self.params = params
        self.ctx = ctx

    @abc.abstractmethod
    async def check(self) -> CheckResult:
        """Return whether the watched thing is healthy. Must not raise for an unhealthy target."""

    @classmethod
    def check_params(cls, params: DriverParams, *, base_dir: Path | None = None) -> list[tuple[str, str]]:
        """Checks beyond the schema that need the file system; ``(key, message)`` pairs."""
        return []
