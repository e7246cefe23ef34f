"""Suite-wide test plumbing: which tests run in the serial pass of ``make test``.

``make test`` runs the suite in two passes (see the Makefile): the tests marked
``serial`` one at a time, then everything else spread over pytest-xdist workers
(``--dist loadgroup``). In that pass each test file is one ``xdist_group`` (its
tests run in order on one worker, so a module's shared cluster or etcd is started
once), except the files in ``SHARED_PORT_PATHS``: they use fixed ports (the seed's
ports +10000, under a file lock) and are one group together, run one after the
other on one worker instead of waiting for each other's lock. ``serial`` is for tests whose timing is the thing tested
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
    "tests/integration/test_recovery.py",
    "tests/resources/test_disk.py",
    "tests/faults/",
)

#: Test files that use fixed ports (tests/domains/conftest.py PORTS_LOCK): one xdist group.
SHARED_PORT_PATHS = (
    "tests/domains/",
    "tests/resources/test_conformance_domain.py",
    "tests/integration/test_seed_scripts.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serial: runs in make test's serial pass, never beside other tests (see tests/conftest.py)")
    # registered here too for the serial pass, which runs without the xdist plugin (-p no:xdist)
    config.addinivalue_line("markers", "xdist_group(name): tests of one group run on one xdist worker")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        rel = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if rel.startswith(SERIAL_PATHS):
            item.add_marker(pytest.mark.serial)
        elif not any(m.name == "xdist_group" for m in item.iter_markers()):
            group = "shared-ports" if rel.startswith(SHARED_PORT_PATHS) else rel.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
