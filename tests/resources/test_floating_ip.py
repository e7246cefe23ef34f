"""floating_ip: parameters (no root) and the driver for real inside harness nodes (root)."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError

from kagemusha.resources import driver_class
from kagemusha.resources.floating_ip import FloatingIP, FloatingIPParams
from kagemusha.testing.netns import Harness
from tests.testing._nsrun import NodeError, ns_call


def test_registered() -> None:
    assert driver_class("floating_ip") is FloatingIP


def test_params() -> None:
    p = FloatingIPParams(address="198.18.0.100/24", interface="eth0")
    assert str(p.address) == "198.18.0.100/24"
    assert (p.arp_count, p.probe_count, p.probe_timeout) == (3, 2, 0.1)
    for bad in (
        {"address": "198.18.0.100", "interface": "eth0"},  # no prefix
        {"address": "fe80::1/64", "interface": "eth0"},  # IPv6 is not supported
        {"address": "198.18.0.100/24", "interface": ""},
        {"address": "198.18.0.100/24", "interface": "eth0", "arp_count": -1},
        {"address": "198.18.0.100/24", "interface": "eth0", "colour": "red"},
    ):
        with pytest.raises(ValidationError):
            FloatingIPParams.model_validate(bad)


CONFORMANCE = """
from kagemusha import _os
from kagemusha.resources.floating_ip import FloatingIP
from kagemusha.testing._driver import check_driver

async def main(address, interface):
    from ipaddress import IPv4Interface
    vip = IPv4Interface(address)

    async def really(step, running):
        present = any(a.ip == vip.ip for a in await _os.list_addresses(interface))
        assert present == running, f"address present={present}, expected {running}"

    report = await check_driver(FloatingIP, {"address": address, "interface": interface}, after_step=really)
    return str(report)
"""


@pytest.mark.root
def test_conformance(harness: Harness) -> None:
    report = ns_call(harness, "n1", CONFORMANCE, address=str(harness.vip), interface="eth0")
    assert "probe after fence again -> stopped" in report
    assert harness.vip_holders() == []


OP = """
from kagemusha.resources import ResourceContext, StartEnv
from kagemusha.resources.floating_ip import FloatingIP, FloatingIPParams

async def main(op, **params):
    d = FloatingIP(FloatingIPParams(**params), ResourceContext("c", "g", "fip1", "n", Path("/nonexistent")))
    if op == "probe":
        p = await d.probe()
        return [str(p.state), p.reason]
    await getattr(d, op)(StartEnv()) if op != "fence" else await d.fence()
    return None
"""


def mac(h: Harness, node: str) -> str:
    out = h.run(node, ["cat", "/sys/class/net/eth0/address"]).stdout
    return out.strip()


def client_neigh(h: Harness, ip: str) -> str:
    return h.run("client", ["ip", "neigh", "show", ip]).stdout


@pytest.mark.root
def test_moves_between_nodes_and_client_follows(harness: Harness) -> None:
    h = harness
    vip = str(h.vip)
    ns_call(h, "n1", OP, op="start", address=vip, interface="eth0")
    assert h.vip_holders() == ["n1"]
    h.run("client", ["ping", "-c", "1", "-W", "1", str(h.vip.ip)])
    assert mac(h, "n1") in client_neigh(h, str(h.vip.ip))

    ns_call(h, "n1", OP, op="stop", address=vip, interface="eth0")
    ns_call(h, "n2", OP, op="start", address=vip, interface="eth0")
    assert h.vip_holders() == ["n2"]
    # The gratuitous ARPs moved the client's cache entry to n2 without the client asking.
    assert mac(h, "n2") in client_neigh(h, str(h.vip.ip))
    h.run("client", ["ping", "-c", "1", "-W", "1", str(h.vip.ip)])


@pytest.mark.root
def test_duplicate_address_fails_start(harness: Harness) -> None:
    h = harness
    vip = str(h.vip)
    ns_call(h, "n2", OP, op="start", address=vip, interface="eth0")
    with pytest.raises(NodeError) as err:
        ns_call(h, "n1", OP, op="start", address=vip, interface="eth0")
    assert err.value.type == "ResourceFailed"
    assert str(h.vip) in err.value.message and "in use by another host" in err.value.message
    assert mac(h, "n2") in err.value.message
    assert h.vip_holders() == ["n2"], "a failed start must not add the address"


@pytest.mark.root
def test_missing_interface(harness: Harness) -> None:
    h = harness
    with pytest.raises(NodeError) as err:
        ns_call(h, "n1", OP, op="start", address=str(h.vip), interface="eth9")
    assert err.value.type == "NotInstalled" and "eth9" in err.value.message
    assert ns_call(h, "n1", OP, op="probe", address=str(h.vip), interface="eth9")[0] == "stopped"
    ns_call(h, "n1", OP, op="stop", address=str(h.vip), interface="eth9")


@pytest.mark.root
def test_probe_running_when_added_by_hand(harness: Harness) -> None:
    h = harness
    h.run("n1", ["ip", "addr", "add", str(h.vip), "dev", "eth0"])
    assert ns_call(h, "n1", OP, op="probe", address=str(h.vip), interface="eth0")[0] == "running"
    ns_call(h, "n1", OP, op="fence", address=str(h.vip), interface="eth0")
    assert h.vip_holders() == []
    with pytest.raises(subprocess.CalledProcessError):
        h.run("client", ["ping", "-c", "1", "-W", "1", str(h.vip.ip)])


@pytest.mark.root
def test_duplicate_check_with_defaults_catches_a_foreign_host(harness: Harness) -> None:
    """The default check (2 probes, 0.1 s) sees a host that holds the address outside kagemusha."""
    h = harness
    h.run("n2", ["ip", "addr", "add", str(h.vip), "dev", "eth0"])  # a foreign host: no driver, no lease
    with pytest.raises(NodeError) as err:
        ns_call(h, "n1", OP, op="start", address=str(h.vip), interface="eth0")
    assert err.value.type == "ResourceFailed" and mac(h, "n2") in err.value.message
    assert h.vip_holders() == ["n2"]
    h.run("n2", ["ip", "addr", "del", str(h.vip), "dev", "eth0"])


ANNOUNCER = """
from kagemusha.resources import ResourceContext, StartEnv
from kagemusha.resources.floating_ip import FloatingIP, FloatingIPParams

async def main(address, interface, end):
    d = FloatingIP(FloatingIPParams(address=address, interface=interface, arp_count=50, arp_interval=0.2),
                   ResourceContext("c", "g", "fip1", "n", Path("/nonexistent")))
    await d.start(StartEnv())
    running = d._announcer is not None and not d._announcer.done()
    await (d.fence() if end == "fence" else d.stop(StartEnv()))
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    return [running, d._announcer is None, len(others)]
"""


@pytest.mark.root
@pytest.mark.parametrize("end", ["stop", "fence"])
def test_repeated_announcements_end_before_the_address_goes(harness: Harness, end: str) -> None:
    """start returns after the first gratuitous ARP; the repeats run on, and stop/fence end them first."""
    h = harness
    running, cleared, others = ns_call(h, "n1", ANNOUNCER, address=str(h.vip), interface="eth0", end=end)
    assert running, "the repeated announcements should still be going when start returns"
    assert cleared and others == 0, "stop/fence must end the announcements (never announce a released address)"
    assert h.vip_holders() == []


SOCKETS = """
import socket, threading
from kagemusha.resources import ResourceContext, StartEnv
from kagemusha.resources.floating_ip import FloatingIP, FloatingIPParams

made = []

class Recorded(socket.socket):
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        super().__init__(family, type, proto, fileno)
        if family == socket.AF_PACKET:
            self._rec = {"proto": proto, "closed_on_loop_thread": None}
            made.append(self._rec)

    def close(self):
        rec = getattr(self, "_rec", None)
        if rec is not None and rec["closed_on_loop_thread"] is None:
            rec["closed_on_loop_thread"] = threading.current_thread() is threading.main_thread()
        super().close()

socket.socket = Recorded

async def main(address, interface):
    d = FloatingIP(FloatingIPParams(address=address, interface=interface, arp_count=1),
                   ResourceContext("c", "g", "fip1", "n", Path("/nonexistent")))
    await d.start(StartEnv())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(r["closed_on_loop_thread"] is None for r in made) and loop.time() < deadline:
        await asyncio.sleep(0.01)  # the close runs in a worker thread: wait for it (bounded)
    await d.fence()
    return made
"""


@pytest.mark.root
def test_start_opens_one_arp_socket_and_closes_it_off_the_event_loop(harness: Harness) -> None:
    """The check and the first announcement share one packet socket, opened with protocol 0 and
    closed in a worker thread: each open (bound after a protocol was given) and each close waits
    for the kernel's RCU grace period, which stalled the agent's loop ~10 ms each in a failover."""
    made = ns_call(harness, "n1", SOCKETS, address=str(harness.vip), interface="eth0")
    assert made == [{"proto": 0, "closed_on_loop_thread": False}], made
    assert harness.vip_holders() == []
