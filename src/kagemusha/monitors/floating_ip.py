"""``floating_ip`` monitor: the virtual IP is still on its interface (and the link is up).

Usage in ``cluster.toml``::

    [[groups.monitors]]
    name = "fipw1"
    type = "floating_ip"
    address = "198.18.0.100/24"
    interface = "eth0"

Reads the kernel's address list with netlink, in the monitor's network
namespace. With ``check_link`` (default) an interface that is down or has lost
its carrier counts as unhealthy too: the address is there but nobody can
reach it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from typing import ClassVar

from pydantic import Field, field_validator
from pyroute2.netlink.exceptions import NetlinkError

from kagemusha import _os
from kagemusha.monitors._base import CheckResult, Monitor
from kagemusha.resources._base import DriverParams

__all__ = ["FloatingIPMonitor", "FloatingIPMonitorParams"]


class FloatingIPMonitorParams(DriverParams):
    #: The address to watch; the prefix length, if given, is not compared.
    address: IPv4Interface
    interface: str = Field(min_length=1, max_length=15)
    #: Also require the interface to be up with carrier.
    check_link: bool = True

    @field_validator("address", mode="before")
    @classmethod
    def _bare(cls, v: object) -> object:
        if isinstance(v, str) and "/" not in v:
            return f"{v}/32"
        return v


class FloatingIPMonitor(Monitor):
    type_name: ClassVar[str] = "floating_ip"
    Params = FloatingIPMonitorParams
    params: FloatingIPMonitorParams

    async def check(self) -> CheckResult:
        p = self.params
        ip: IPv4Address = p.address.ip
        try:
            addrs = await _os.list_addresses(p.interface)
            link = await _os.link_state(p.interface) if p.check_link else None
        except _os.NoSuchInterface:
            return CheckResult(False, f"no interface {p.interface}")
        except (OSError, NetlinkError) as exc:
            return CheckResult(False, f"cannot read {p.interface}: {exc}")
        if not any(a.ip == ip for a in addrs):
            return CheckResult(False, f"{ip} is not on {p.interface}")
        if link is not None:
            if not link.admin_up:
                return CheckResult(False, f"{p.interface} is down")
            if not link.carrier:
                return CheckResult(False, f"{p.interface} has no carrier (operstate {link.operstate})")
        return CheckResult(True, f"{ip} on {p.interface}")
