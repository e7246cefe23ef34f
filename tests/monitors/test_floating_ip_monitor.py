"""floating_ip monitor inside a harness node (root)."""

from __future__ import annotations

import pytest

from kagemusha.monitors import monitor_class
from kagemusha.monitors.floating_ip import FloatingIPMonitor, FloatingIPMonitorParams
from kagemusha.testing.netns import Harness
from tests.testing._nsrun import ns_call


def test_registered_and_params() -> None:
    assert monitor_class("floating_ip") is FloatingIPMonitor
    assert str(FloatingIPMonitorParams(address="198.18.0.100", interface="eth0").address.ip) == "198.18.0.100"


CHECK = """
from kagemusha.monitors import MonitorContext
from kagemusha.monitors.floating_ip import FloatingIPMonitor, FloatingIPMonitorParams

async def main(**params):
    m = FloatingIPMonitor(FloatingIPMonitorParams(**params), MonitorContext("c", "g", "m", "n", Path("/x")))
    r = await m.check()
    return [r.ok, r.detail]
"""


@pytest.mark.root
def test_floating_ip_monitor(harness: Harness) -> None:
    h = harness
    vip = str(h.vip)
    ok, detail = ns_call(h, "n1", CHECK, address=vip, interface="eth0")
    assert not ok and "not on eth0" in detail
    h.run("n1", ["ip", "addr", "add", vip, "dev", "eth0"])
    assert ns_call(h, "n1", CHECK, address=vip, interface="eth0")[0] is True
    assert ns_call(h, "n2", CHECK, address=vip, interface="eth0")[0] is False
    h.link_down("n1")  # cable pulled: the address is there but unreachable
    ok, detail = ns_call(h, "n1", CHECK, address=vip, interface="eth0")
    assert not ok and "no carrier" in detail
    assert ns_call(h, "n1", CHECK, address=vip, interface="eth0", check_link=False)[0] is True
    h.link_up("n1")
    ok, detail = ns_call(h, "n1", CHECK, address=vip, interface="eth7")
    assert not ok and "no interface eth7" in detail
