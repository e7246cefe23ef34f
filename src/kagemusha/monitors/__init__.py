"""Monitors. One checker per file, registered by type name and imported lazily."""

from __future__ import annotations

import importlib

from kagemusha.monitors._base import CheckResult, Monitor, MonitorContext

REGISTRY: dict[str, str] = {
    "exec": "kagemusha.monitors.exec:ExecMonitor",
    "pid": "kagemusha.monitors.pid:PidMonitor",
    "floating_ip": "kagemusha.monitors.floating_ip:FloatingIPMonitor",
    "disk": "kagemusha.monitors.disk:DiskMonitor",
    "http": "kagemusha.monitors.http:HttpMonitor",
    "tcp": "kagemusha.monitors.tcp:TcpMonitor",
    "domain": "kagemusha.monitors.domain:DomainMonitor",
}


def monitor_class(type_name: str) -> type[Monitor]:
    """Return the monitor class for ``type_name`` (KeyError when unknown)."""
    module, _, cls = REGISTRY[type_name].partition(":")
    mon: type[Monitor] = getattr(importlib.import_module(module), cls)
    return mon


__all__ = ["REGISTRY", "CheckResult", "Monitor", "MonitorContext", "monitor_class"]
