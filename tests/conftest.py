"""Suite-wide test plumbing: which tests run in the serial pass of ``make test``.

``make test`` runs the suite in two passes (see the Makefile): the tests marked
``serial`` one at a time, then everything else spread over pytest-xdist workers,
each test file on one worker (``--dist loadfile``, so a module's shared cluster or
etcd is started once). ``serial`` is for tests whose timing is the thing tested
and that cannot share two cores with other work: end-to-end failovers through
floating IPs and partitions of an etcd cluster in network namespaces, and the
tests that assert fencing and store deadlines of a second or less (a node stops
its services before its lease expires; a request to a hung etcd costs one timeout). A new test of that kind goes under one of
``SERIAL_PATHS`` or carries ``@pytest.mark.serial`` itself.
"""

from __future__ import annotations

import pytest

#: Test files (or directories) run in the serial pass, relative to the repository root.
SERIAL_PATHS = (
    "tests/e2e/",
    "tests/partition/",
    "tests/agent/",
    "tests/integration/test_failover.py",
    "tests/integration/test_etcd_cluster.py",
    "tests/store/test_etcd.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serial: runs in make test's serial pass, never beside other tests (see tests/conftest.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        rel = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if rel.startswith(SERIAL_PATHS):
            item.add_marker(pytest.mark.serial)
