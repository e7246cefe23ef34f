"""End-to-end fixtures: the netns harness and a kagemusha cluster in it (root only).

Every test here needs root: without it (or without a tool) they skip with the reason, and
under ``CI=true`` they fail instead (``netns.require``). Teardown, whatever happened: the
agents leave (SIGTERM, then SIGKILL by pid), then the harness kills what is left in its
namespaces, unmounts, detaches the loop devices and deletes the namespaces.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kagemusha.testing import netns
from tests.e2e._cluster import NsCluster

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest) -> Iterator[Callable[..., NsCluster]]:
    netns.require()
    made: list[tuple[netns.Harness, NsCluster]] = []
    workdir = Path(tempfile.mkdtemp(prefix="kg-e2e-"))

    def make(nodes: tuple[str, ...] = ("n1", "n2"), disks: int = 1, **kw: object) -> NsCluster:
        h = netns.Harness(list(nodes), disks=disks, disk_size_mb=32)
        h.start()
        c = NsCluster(h, workdir / f"c{len(made)}", **kw)  # type: ignore[arg-type]
        made.append((h, c))
        return c

    failed = False
    try:
        yield make
        failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
    finally:
        for h, c in made:
            try:
                c.stop_all()
            finally:
                h.close()
        if failed or os.environ.get("KG_E2E_KEEP"):
            print(f"e2e: logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
