"""Hypothesis profiles for the fuzz tests.

``make test`` runs the fast default (a few dozen examples per property, seconds each). The full run
(``KAGEMUSHA_FUZZ=full python -m pytest tests/fuzz``) generates at least 1,000 inputs per property.
Each test reads its example count from ``examples(fast, full)`` so the counts are stated where they apply.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FULL = os.environ.get("KAGEMUSHA_FUZZ", "").lower() == "full"

settings.register_profile(
    "kagemusha-fast", deadline=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)
settings.register_profile("kagemusha-full", parent=settings.get_profile("kagemusha-fast"))
settings.load_profile("kagemusha-full" if FULL else "kagemusha-fast")


def examples(fast: int, full: int) -> int:
    """How many inputs a property gets in this run."""
    return full if FULL else fast
