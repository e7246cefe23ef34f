"""Conformance suites and fakes for kagemusha's contracts.

- ``check_store(make_store)``: the store contract, against any backend.
- ``check_driver(make_driver, params)``: the resource contract (ocf-tester's script).
- ``MemoryStore``: an in-memory store (passes ``check_store``) for unit tests above the store.
- ``python -m kagemusha.testing.simulate``: the deterministic simulation of the whole agent (several real
  agents on a virtual clock, random fault schedules, invariant checks); imported only when run.
"""

from __future__ import annotations

from typing import Any

from kagemusha.testing._memory import MemoryBackend, MemoryStore
from kagemusha.testing._store import check_store


def __getattr__(name: str) -> Any:
    # check_driver lives in its own module, imported on first use.
    if name == "check_driver":
        from kagemusha.testing._driver import check_driver

        return check_driver
    raise AttributeError(name)


__all__ = ["MemoryBackend", "MemoryStore", "check_driver", "check_store"]
