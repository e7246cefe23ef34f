from __future__ import annotations

from collections.abc import Iterator

import pytest

from kagemusha.testing import netns


@pytest.fixture
def harness() -> Iterator[netns.Harness]:
    netns.require()
    with netns.Harness(["n1", "n2"]) as h:
        yield h
