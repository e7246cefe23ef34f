"""Resource drivers. One driver per file, registered here by type name and imported lazily."""

from __future__ import annotations

import importlib

from kagemusha.resources._base import (
    ClpDisk,
    ClpEvent,
    ClpServer,
    DriverParams,
    Probe,
    ProbeState,
    Resource,
    ResourceContext,
    StartEnv,
)

#: type name -> "module:Class". Imported only when a config uses the type.
REGISTRY: dict[str, str] = {
    "exec": "kagemusha.resources.exec:ExecResource",
    "floating_ip": "kagemusha.resources.floating_ip:FloatingIP",
    "disk": "kagemusha.resources.disk:Disk",
    "domain": "kagemusha.resources.domain:DomainResource",
}


def driver_class(type_name: str) -> type[Resource]:
    """Return the driver class for ``type_name``.

    Raises:
        KeyError: unknown type.
    """
    module, _, cls = REGISTRY[type_name].partition(":")
    driver: type[Resource] = getattr(importlib.import_module(module), cls)
    return driver


__all__ = [
    "REGISTRY",
    "ClpDisk",
    "ClpEvent",
    "ClpServer",
    "DriverParams",
    "Probe",
    "ProbeState",
    "Resource",
    "ResourceContext",
    "StartEnv",
    "driver_class",
]
