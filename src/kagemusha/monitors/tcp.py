"""``tcp`` monitor: a TCP connection to ``host:port`` is accepted.

Usage in ``cluster.toml``::

    [[groups.monitors]]
    name = "orbw1"
    type = "tcp"
    host = "198.18.0.100"
    port = 2809

Connects and closes at once; the caller's timeout bounds the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

from pydantic import Field

from kagemusha.monitors._base import CheckResult, Monitor
from kagemusha.resources._base import DriverParams

__all__ = ["TcpMonitor", "TcpMonitorParams"]


class TcpMonitorParams(DriverParams):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class TcpMonitor(Monitor):
    type_name: ClassVar[str] = "tcp"
    Params = TcpMonitorParams
    params: TcpMonitorParams

    async def check(self) -> CheckResult:
        target = f"{self.params.host}:{self.params.port}"
        try:
            _, writer = await asyncio.open_connection(self.params.host, self.params.port)
        except OSError as exc:
            return CheckResult(False, f"cannot connect to {target}: {exc.strerror or exc}")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return CheckResult(True, f"{target} accepts connections")
