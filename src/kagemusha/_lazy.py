"""Package names imported when first used (PEP 562), for packages the CLI's fast paths touch.

``__getattr__ = lazy_names(__name__, {"Name": "_module", ...}, globals())`` in a package's
``__init__``: ``package.Name`` imports ``package._module`` the first time and keeps the value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, where: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: each name of ``where`` from its submodule, on first use."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__
