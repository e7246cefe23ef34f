"""``/metrics`` parses with prometheus-client's parser; the values follow a failover."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import client
from tests.integration.cluster import LocalCluster


def scrape(c: LocalCluster, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with client(c, node) as http:
        r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_a_failover(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster()
    deadline = time.monotonic() + 5
    while val(m := scrape(c, "n2"), "kagemusha_lease_renew_seconds", node="n2") == 0:  # not renewed yet
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert val(m, "kagemusha_group_state", group="webotx1", state="online") == 1
    assert val(m, "kagemusha_group_state", group="webotx1", state="offline") == 0
    assert val(m, "kagemusha_group_owner", group="webotx1", node="n1") == 1
    assert val(m, "kagemusha_group_owner", group="webotx1", node="n2") == 0
    assert val(m, "kagemusha_group_failovers_total", group="webotx1", node="n2") == 0
    assert val(m, "kagemusha_group_last_failover_seconds", group="webotx1", node="n2") == 0
    assert val(m, "kagemusha_node_up", node="n1") == 1 and val(m, "kagemusha_agent_member", node="n2") == 1
    assert val(m, "kagemusha_lease_renew_seconds", node="n2") > 0
    assert val(m, "kagemusha_store_request_seconds", node="n2") > 0
    assert val(m, "kagemusha_monitor_failures_total", group="webotx1", monitor="svcmon", node="n2") == 0

    c.crash("n1")
    c.wait_group("webotx1", "online", "n2", timeout=10)
    deadline = time.monotonic() + 5
    while val(m := scrape(c, "n2"), "kagemusha_group_failovers_total", group="webotx1", node="n2") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert val(m, "kagemusha_group_last_failover_seconds", group="webotx1", node="n2") > 0
    assert val(m, "kagemusha_group_owner", group="webotx1", node="n2") == 1
    assert val(m, "kagemusha_group_owner", group="webotx1", node="n1") == 0
    assert val(m, "kagemusha_group_running_here", group="webotx1", node="n2") == 1
    assert val(m, "kagemusha_node_up", node="n1") == 0

    # the service dies on n2: the monitor's failures count up (then it restarts the service in place)
    pidfile = c.dir / "svc" / "webotx1.n2.pid"
    deadline = time.monotonic() + 5
    while not pidfile.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while val(m := scrape(c, "n2"), "kagemusha_monitor_failures_total", group="webotx1", monitor="svcmon",
              node="n2") < 2:
        assert time.monotonic() < deadline, "monitor failures not counted"
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while val(m := scrape(c, "n2"), "kagemusha_group_restarts_total", group="webotx1", node="n2") < 1:
        assert time.monotonic() < deadline, "restart not counted"
        time.sleep(0.1)
