"""``pid`` monitor: the process named by a pid file (written by the group's exec resource) is alive."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import psutil
from pydantic import Field

from kagemusha.monitors._base import CheckResult, Monitor
from kagemusha.resources._base import DriverParams

__all__ = ["PidMonitor"]


class PidMonitorParams(DriverParams):
    pid_file: str = Field(min_length=1, description="file holding the pid of the watched process")


class PidMonitor(Monitor):
    type_name: ClassVar[str] = "pid"
    Params = PidMonitorParams
    params: PidMonitorParams

    async def check(self) -> CheckResult:
        path = Path(self.params.pid_file)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            return CheckResult(False, f"cannot read pid file {path}: {exc.strerror}")
        if not text.isdigit():
            return CheckResult(False, f"pid file {path} holds {text[:20]!r}, expected a process id")
        pid = int(text)
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return CheckResult(False, f"process {pid} is a zombie")
        except psutil.NoSuchProcess:
            return CheckResult(False, f"process {pid} from {path} is not running")
        except psutil.Error as exc:
            return CheckResult(False, f"cannot inspect process {pid}: {exc}")
        return CheckResult(True, f"process {pid} alive")
