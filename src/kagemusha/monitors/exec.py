"""``exec`` monitor: runs a command; exit 0 means healthy (CLUSTERPRO's custom monitor)."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from pydantic import Field

from kagemusha.monitors._base import CheckResult, Monitor
from kagemusha.resources._base import DriverParams
from kagemusha.resources.exec import describe_exit, run_script

__all__ = ["ExecMonitor"]


class ExecMonitorParams(DriverParams):
    command: str = Field(min_length=1, description="shell command; exit 0 = healthy")
    env: dict[str, str] = Field(default_factory=dict)


class ExecMonitor(Monitor):
    type_name: ClassVar[str] = "exec"
    Params = ExecMonitorParams
    params: ExecMonitorParams

    async def check(self) -> CheckResult:
        tag = {
            "KAGEMUSHA_CLUSTER_ID": self.ctx.cluster_id or "-",
            "KAGEMUSHA_GROUP": self.ctx.group,
            "KAGEMUSHA_MONITOR": self.ctx.monitor,
            "KAGEMUSHA_NODE": self.ctx.node,
        }
        quiet = logging.getLogger("kagemusha.monitor.output")
        try:
            rc = await run_script(
                ["/bin/sh", "-c", self.params.command],
                env={**self.ctx.env, **self.params.env, "KAGEMUSHA_GROUP": self.ctx.group, "KAGEMUSHA_NODE": self.ctx.node},
                tag=tag,
                log=quiet,
                log_prefix=f"group={self.ctx.group} monitor={self.ctx.monitor} |",
            )
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            return CheckResult(False, f"cannot run command: {exc}")
        return CheckResult(rc == 0, "exit 0" if rc == 0 else f"command {describe_exit(rc)}")
