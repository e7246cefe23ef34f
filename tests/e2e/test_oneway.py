"""The seed's one-way standby, end to end: webotx1 = fip1 + sd1 + exec1 (seed scripts) + domain monitor.

n1 serves domain1 (created on the switchover disk from the seed's domain1.properties, serving
``kagemusha.demo_app``) at the VIP; a client in its own namespace reads and writes through the VIP
while n1 loses power. Service resumes from n2, every write the app acknowledged is on the disk, and
at no sampled moment do both nodes hold the VIP or the mount.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e._cluster import APP_PORTS, Client, NsCluster, Sampler, outage

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]


def oneway(make_cluster: Callable[..., NsCluster], **group: object) -> NsCluster:
    c = make_cluster()
    h = c.h
    mp = c.mount_point(0)
    c.create_domain(h.disk, mp, "domain1", on="n1", others=["n2"])
    c.groups = [c.webotx_group("webotx1", ["n1", "n2"], disk=h.disk, mp=mp, vip=str(h.vip), domain="domain1",
                               scripts="oneway", **group)]
    c.write_config()
    for n in c.nodes:
        c.start(n)
    c.wait_group("webotx1", "online", "n1", timeout=40)
    return c


def test_crash_of_the_active_node(make_cluster: Callable[..., NsCluster]) -> None:
    c = oneway(make_cluster)
    h = c.h
    vip = str(h.vip.ip)
    assert "domain1 served by n1" in c.get(vip, APP_PORTS["domain1"])
    assert h.vip_holders() == ["n1"] and h.disk_holders() == ["n1"]

    # Item 8: status shows each resource's state and each monitor's last result and fail count.
    g = c.group("webotx1")
    assert {r["name"]: r["state"] for r in g["resources"]} == {"fip1": "online", "sd1": "online", "exec1": "online"}
    deadline = time.monotonic() + 10
    while (mon := c.group("webotx1")["monitors"][0])["last"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mon["name"] == "otxw1" and mon["last"] == "ok" and mon["fail_count"] == 0, mon

    with Sampler(h, [h.vip], [h.disk]) as sampler:
        client = Client(h, c.dir, vip, APP_PORTS["domain1"])
        time.sleep(1.5)
        t_crash = time.time()
        c.crash("n1")
        c.wait_group("webotx1", "online", "n2", timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            recs = client.records()
            if any(r["ok"] and r["t"] > t_crash and "n2" in r.get("body", "") for r in recs if r["op"] == "get"):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        records = client.stop()
    sampler.assert_exclusive()

    served_after = [r for r in records if r["ok"] and r["t"] > t_crash and r["op"] == "get"]
    assert served_after and all("served by n2" in r["body"] for r in served_after), served_after[:3]
    assert "domain1 served by n2" in c.get(vip, APP_PORTS["domain1"])
    gap = outage(records, t_crash)
    print(f"client-visible outage after the crash of n1: {gap:.2f} s ({len(records)} requests)")
    assert gap < 20

    # Every acknowledged write is on the disk (now mounted on n2 only).
    acked = {r["key"] for r in records if r["op"] == "put" and r["ok"]}
    assert acked
    kv = h.run("n2", ["cat", f"{c.mount_point(0)}/domains/domain1/state/kv.log"]).stdout
    on_disk = {line.split("\t")[0] for line in kv.splitlines()}
    assert acked <= on_disk, f"acknowledged but lost: {sorted(acked - on_disk)[:10]}"
    assert h.vip_holders() == ["n2"] and h.disk_holders() == ["n2"]

    # The seed's scripts ran with the CLUSTERPRO variables on n2: FAILOVER, OTHER.
    log2 = c.log("n2")
    assert "FAILOVER1" in log2 and "ON_OTHER2" in log2
