from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster


@pytest.fixture()
def make_cluster(tmp_path: Path) -> Iterator[object]:
    made: list[LocalCluster] = []

    def make(**kw: object) -> LocalCluster:
        c = LocalCluster(tmp_path / f"c{len(made)}", **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
    for c in made:
        c.assert_no_overlap()
