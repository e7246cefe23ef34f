"""The seed's two-way (mutual) standby, end to end, with ``failback = "auto"``.

webotx1 (home n1: VIP .100, disk 1 at data1, domain1 on port 80) and webotx2 (home n2: VIP .101,
disk 2 at data2, domain2 with the seed's domain2.properties, port 8081), each with the seed's
two-way scripts and a domain monitor. Either node crashing leaves both groups served by the
survivor; when it comes back, its group returns home. No VIP and no disk is ever held twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e._cluster import APP_PORTS, NsCluster, Sampler

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]


def test_either_node_crashing_leaves_both_groups_served(make_cluster: Callable[..., NsCluster]) -> None:
    c = make_cluster(disks=2)
    h = c.h
    vip1, vip2 = h.vips(2)
    d1, d2 = h.disks
    c.create_domain(d1, c.mount_point(0), "domain1", on="n1", others=["n2"])
    c.create_domain(d2, c.mount_point(1), "domain2", on="n2", others=["n1"])
    c.groups = [
        c.webotx_group("webotx1", ["n1", "n2"], disk=d1, mp=c.mount_point(0), vip=str(vip1), domain="domain1",
                       scripts="twoway", failback="auto"),
        c.webotx_group("webotx2", ["n2", "n1"], disk=d2, mp=c.mount_point(1), vip=str(vip2), domain="domain2",
                       scripts="twoway", failback="auto"),
    ]
    c.write_config()
    for n in c.nodes:
        c.start(n)
    c.wait_group("webotx1", "online", "n1", timeout=40)
    c.wait_group("webotx2", "online", "n2", timeout=40)

    def served(where1: str, where2: str) -> None:
        b1 = c.get(str(vip1.ip), APP_PORTS["domain1"])
        b2 = c.get(str(vip2.ip), APP_PORTS["domain2"])
        assert f"domain1 served by {where1}" in b1, b1
        assert f"domain2 served by {where2}" in b2, b2
        assert h.vip_holders(vip1) == [where1] and h.vip_holders(vip2) == [where2]
        assert h.disk_holders(d1) == [where1] and h.disk_holders(d2) == [where2]

    served("n1", "n2")
    with Sampler(h, [vip1, vip2], [d1, d2]) as sampler:
        for victim, survivor in (("n1", "n2"), ("n2", "n1")):
            c.crash(victim)
            c.wait_group("webotx1", "online", survivor, timeout=30)
            c.wait_group("webotx2", "online", survivor, timeout=30)
            served(survivor, survivor)
            # The node comes back: failback is auto, so its home group returns to it.
            c.revive(victim)
            home = "webotx1" if victim == "n1" else "webotx2"
            c.wait_group(home, "online", victim, timeout=40)
            c.wait_group("webotx2" if home == "webotx1" else "webotx1", "online", survivor, timeout=5)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the status flips to online just before the client sees it
                try:
                    served("n1", "n2")
                    break
                except AssertionError:
                    time.sleep(0.2)
            served("n1", "n2")
    sampler.assert_exclusive()
    assert len(sampler.samples) > 100
