"""Real agents (subprocesses on one local store) with an API token, and httpx clients for their APIs."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.cluster import LocalCluster, cluster_factory

TOKEN = "kgm-test-token-3f9a1c"


def monitor_spec(c: LocalCluster) -> dict[str, Any]:
    """A monitor that fails when the group's service process (the recorder's ``sleep``) is gone."""
    return {
        "name": "svcmon", "type": "exec", "interval": 0.2, "timeout": 2.0, "retries": 2,
        "restart_limit": 1, "failover_limit": 1,
        "command": 'kill -0 "$(cat "$SVC/$KAGEMUSHA_GROUP.$KAGEMUSHA_NODE.pid")"', "env": {"SVC": str(c.dir / "svc")},
    }


def verify_of(c: LocalCluster) -> ssl.SSLContext | bool:
    """What to trust for ``c``'s API: its own certificate when it serves TLS."""
    assert c.config is not None
    cert = c.config.cluster.tls_cert_file
    return ssl.create_default_context(cafile=cert) if cert else True


def wait_api(c: LocalCluster, node: str, timeout: float = 15.0) -> None:
    """Until ``node``'s API answers ``/health`` with 200 (the agent serves and is in the cluster)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(c.api_url(node) + "/health", timeout=1.0, verify=verify_of(c))
            if r.status_code == 200:
                return
            last = r.status_code
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"API of {node} not healthy after {timeout}s: {last}\n{c.log(node)[-3000:]}")


def start_cluster(path: Path, **kw: Any) -> LocalCluster:
    c = LocalCluster(path, api_token=TOKEN, **kw)
    c.groups = [c.group("webotx1", list(c.nodes), monitors=[monitor_spec(c)])]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", c.nodes[0])
    for n in c.nodes:
        wait_api(c, n)
    return c


def client(c: LocalCluster, node: str, token: str | None = TOKEN, **kw: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}".strip()} if token is not None else {}
    return httpx.Client(base_url=c.api_url(node), headers=headers, timeout=30.0, verify=verify_of(c), **kw)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One two-node cluster for tests that only read or are refused (auth, validation)."""
    c = start_cluster(tmp_path_factory.mktemp("api") / "c")
    try:
        yield c
    finally:
        c.close()
    c.assert_no_overlap()


@pytest.fixture()
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    with cluster_factory(tmp_path, start_cluster) as make:
        yield make
