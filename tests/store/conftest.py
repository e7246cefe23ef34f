"""Fixtures for store tests: a real single-member etcd, started once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kagemusha.testing.etcd import EtcdCluster, require_etcd


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    """One etcd member on 127.0.0.1, shared by a test module; tests use random key prefixes.

    Skipped when etcd is not installed, except under ``CI=true`` where that fails.
    """
    require_etcd()
    with EtcdCluster(1) as cluster:
        yield cluster
