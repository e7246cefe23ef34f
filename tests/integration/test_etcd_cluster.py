"""Real agents on a real etcd (loopback): failover, and a store outage seen by every node."""

from __future__ import annotations

import time

import psutil
import pytest

from kagemusha.testing.etcd import EtcdCluster, require_etcd
from tests.integration.cluster import LocalCluster


@pytest.fixture()
def etcd() -> EtcdCluster:  # type: ignore[misc]
    require_etcd()
    with EtcdCluster(1) as e:
        yield e


def svc_alive(c: LocalCluster, node: str) -> bool:
    f = c.dir / "svc" / f"webotx1.{node}.pid"
    try:
        return psutil.Process(int(f.read_text())).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, psutil.Error):
        return False


def test_failover_on_etcd(make_cluster, etcd: EtcdCluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(cluster={"store": etcd.endpoints, "insecure_store": True})
    c.start_all()
    c.wait_group("webotx1", "online", "n1", timeout=30)
    assert '"key": "cluster.insecure_store"' in c.log("n1"), "the agent warns at start about an open etcd"
    t = c.crash("n1")
    c.wait_group("webotx1", "online", "n2", timeout=15)
    s = c.starts("webotx1")[-1]
    assert (s.node, s.event, s.server) == ("n2", "FAILOVER", "OTHER")
    # etcd rounds the TTL up to whole seconds: 1 s here
    assert s.at - t < 1.0 + 1.5


def test_store_outage_stops_every_group_in_time_and_recovers_once(make_cluster, etcd: EtcdCluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(cluster={"store": etcd.endpoints, "insecure_store": True})
    c.groups = [c.group("webotx1", ["n1", "n2"])]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1", timeout=30)
    assert svc_alive(c, "n1")
    t0 = time.monotonic()
    etcd.stop_member(0, kill=True)
    while svc_alive(c, "n1"):
        assert time.monotonic() - t0 < c.config.cluster.heartbeat_timeout + 0.5, "service outlived the lease"  # type: ignore[union-attr]
        time.sleep(0.01)
    stopped_after = time.monotonic() - t0
    assert stopped_after < c.config.cluster.heartbeat_timeout  # type: ignore[union-attr]
    time.sleep(2.0)
    assert not svc_alive(c, "n1") and not svc_alive(c, "n2"), "nothing starts without the store"
    etcd.start_member(0)
    c.wait_group("webotx1", "online", None, timeout=30)
    time.sleep(2.0)
    starts = c.starts("webotx1")
    assert len(starts) == 2, f"started once more after the outage, got {starts}"
    r = c.cli("status", "--json")
    assert r.returncode == 0
