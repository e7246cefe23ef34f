"""Each package's ``__all__`` names exist, and the documented entry points import."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "kagemusha",
    "kagemusha.errors",
    "kagemusha.config",
    "kagemusha.store",
    "kagemusha.cluster",
    "kagemusha.resources",
    "kagemusha.monitors",
    "kagemusha.agent",
    "kagemusha.domains",
    "kagemusha.testing",
    "kagemusha.procedure",
    "kagemusha.client",
    "kagemusha.appserver",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    mod = importlib.import_module(name)
    exported = getattr(mod, "__all__", None)
    assert exported, f"{name} has no __all__"
    for attr in exported:
        assert getattr(mod, attr, None) is not None, f"{name}.__all__ names {attr!r}, which is missing"


def test_registries_point_at_real_classes() -> None:
    from kagemusha.monitors import REGISTRY as MONITORS
    from kagemusha.monitors import monitor_class
    from kagemusha.resources import REGISTRY as RESOURCES
    from kagemusha.resources import driver_class

    for t in RESOURCES:
        assert driver_class(t).type_name == t
    for t in MONITORS:
        assert monitor_class(t).type_name == t


def test_error_tree() -> None:
    from kagemusha import errors

    assert issubclass(errors.StoreUnavailable, errors.StoreError)
    assert issubclass(errors.ResourceTimeout, errors.ResourceFailed)
    assert errors.__doc__ and "StoreUnavailable" in errors.__doc__
