from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import LocalCluster, cluster_factory


@pytest.fixture()
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    with cluster_factory(tmp_path, LocalCluster) as make:
        yield make
