"""The netns harness: topology, isolation, failure helpers and teardown in every way out (root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kagemusha.testing import netns
from kagemusha.testing.netns import RECORDS, Harness

pytestmark = pytest.mark.root


def root_view() -> dict[str, object]:
    """What the root namespace has: links, addresses, routes (must never change)."""
    out = {}
    for what in (["link"], ["addr"], ["route"], ["-6", "route"]):
        res = subprocess.run(["ip", "-j", *what], capture_output=True, text=True, check=True)
        data = json.loads(res.stdout or "[]")
        for d in data:  # counters and timers move by themselves
            d.pop("stats64", None)
            for a in d.get("addr_info", []):
                a.pop("valid_life_time", None)
                a.pop("preferred_life_time", None)
        out[" ".join(what)] = data
    return out


def leftovers(prefix: str) -> list[str]:
    found = []
    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [line for line in netns_list.splitlines() if line.startswith(prefix)]
    found += [line for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout.splitlines()
              if prefix in line]
    found += [line for line in Path("/proc/mounts").read_text().splitlines() if prefix in line]
    found += [str(p) for p in RECORDS.glob(f"{prefix}*")] if RECORDS.is_dir() else []
    return found


def test_refuses_addresses_outside_the_benchmark_range() -> None:
    with pytest.raises(ValueError, match="outside 198.18.0.0/15"):
        Harness(subnet="10.0.0.0/24")
    with pytest.raises(ValueError, match="bad node name"):
        Harness(["client"])


def test_topology_and_root_namespace_untouched() -> None:
    netns.require()
    before = root_view()
    with Harness(["n1", "n2", "n3"]) as h:
        assert [str(n.address) for n in h.nodes.values()] == ["198.18.0.11/24", "198.18.0.12/24", "198.18.0.13/24"]
        assert (str(h.client.address), str(h.bridge.address), str(h.vip)) == (
            "198.18.0.200/24", "198.18.0.1/24", "198.18.0.100/24")
        assert [str(v.ip) for v in h.vips(2)] == ["198.18.0.100", "198.18.0.101"]
        for target in ("n1", "n2", "n3", "bridge"):
            h.run("client", ["ping", "-c", "1", "-W", "2", str(h.address(target).ip)])
        h.run("n3", ["ping", "-c", "1", "-W", "2", str(h.address("n1").ip)])
        # Each node sees only its own interfaces; IPv6 is off.
        for ns in ("n1", "client", "bridge"):  # no IPv6 at all: nothing but 198.18.0.0/15 on the wire
            assert h.run(ns, ["ip", "-6", "addr"]).stdout == ""
        assert h.run("n1", ["ls", "/sys/class/net"]).stdout.split() == ["eth0", "lo"]
        prefix = h.prefix
    assert root_view() == before
    assert leftovers(prefix) == []


def divmod_dev(h: Harness) -> tuple[int, int]:
    st = os.stat(h.disk.device)
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def wait_inside(h: Harness, node: str, p: subprocess.Popen[bytes]) -> None:
    """Wait until ``p`` is inside ``node``: the child is nsenter until it has entered the node's namespaces
    (never race it)."""
    deadline = time.monotonic() + 10
    while p.pid not in h.pids(node):
        assert p.poll() is None, f"the child exited {p.returncode} before it was seen in {node}"
        assert time.monotonic() < deadline, f"the child was not seen in {node}'s namespaces within 10 s"
        time.sleep(0.01)


def test_mounts_are_per_node(harness: Harness) -> None:
    h = harness
    mp = h.tmp / "data1"
    h.run("n1", ["mkdir", "-p", str(mp)])
    h.run("n1", ["mount", h.disk.device, str(mp)])
    assert h.disk_holders() == ["n1"]
    assert [e.mount_point for e in h.mounts("n1")] == [str(mp)]
    assert h.mounts("n2") == []
    assert str(mp) not in Path("/proc/mounts").read_text()
    assert h.run("n2", ["mountpoint", "-q", str(mp)], check=False).returncode != 0
    assert h.run("n1", ["mountpoint", "-q", str(mp)]).returncode == 0
    # cwd is resolved inside the node: on the node's mount, not the host directory under it.
    dev = h.run("n1", ["stat", "-c", "%d", "."], cwd=mp).stdout.strip()
    assert dev == str(os.makedev(*divmod_dev(h)))
    # The same process sees the same node across calls (the mount namespace persists).
    p = h.popen("n1", ["sh", "-c", f"cat {mp}/../data1/lost+found >/dev/null 2>&1; sleep 600"])
    wait_inside(h, "n1", p)
    assert p.pid not in h.pids("n2")


def test_run_reports_failures_with_node_and_stderr(harness: Harness) -> None:
    with pytest.raises(subprocess.CalledProcessError, match=r"in n1: sh -c .* exited 3\nboom"):
        harness.run("n1", ["sh", "-c", "echo boom >&2; exit 3"])
    with pytest.raises(subprocess.TimeoutExpired):
        harness.run("n1", ["sleep", "30"], timeout=0.3)
    assert harness.pids("n1") == []  # the timed-out command was killed
    assert harness.run("n2", ["sh", "-c", "echo $KG_X"], env={"KG_X": "y"}).stdout == "y\n"
    assert harness.python("client", "import os; print(os.getcwd())", check=True).stdout.strip() == os.getcwd()


def test_crash_link_and_disk_helpers(harness: Harness) -> None:
    h = harness
    mp = h.tmp / "data1"
    h.run("n1", ["mkdir", "-p", str(mp)])
    h.run("n1", ["mount", h.disk.device, str(mp)])
    h.run("n1", ["ip", "addr", "add", str(h.vip), "dev", "eth0"])
    worker = h.popen("n1", ["sleep", "600"], cwd=str(mp))
    assert h.vip_holders() == ["n1"]

    h.link_down("n2")
    assert h.run("client", ["ping", "-c", "1", "-W", "1", str(h.address("n2").ip)], check=False).returncode != 0
    assert "NO-CARRIER" in h.run("n2", ["ip", "link", "show", "eth0"]).stdout
    h.link_up("n2")

    h.crash("n1")
    assert worker.wait(timeout=5) == -9
    assert h.pids("n1") == []
    assert h.vip_holders() == [] and h.disk_holders() == []
    assert h.addresses("n1") == [h.address("n1")]
    assert h.run("client", ["ping", "-c", "1", "-W", "1", str(h.address("n1").ip)], check=False).returncode != 0
    h.revive("n1")
    h.run("client", ["ping", "-c", "1", "-W", "2", str(h.address("n1").ip)])

    h.hide_disk("n2")
    assert h.run("n2", ["stat", "-c", "%F", h.disk.device]).stdout.strip() == "regular empty file"
    assert h.run("n1", ["stat", "-c", "%F", h.disk.device]).stdout.strip() == "block special file"
    assert h.run("n2", ["mount", h.disk.device, str(mp)], check=False).returncode != 0
    h.show_disk("n2")
    assert h.run("n2", ["stat", "-c", "%F", h.disk.device]).stdout.strip() == "block special file"


def _killed_or_gone(pid: int) -> bool:
    """``pid`` has exited, or SIGKILL is pending for it (sent, not yet acted on)."""
    try:
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
    except FileNotFoundError:
        return True
    if fields.get("State", "").startswith(("Z", "X")):
        return True
    pending = int(fields.get("ShdPnd", "0"), 16) | int(fields.get("SigPnd", "0"), 16)
    return bool(pending & (1 << (signal.SIGKILL - 1)))


@pytest.mark.root
def test_a_crash_kills_the_nodes_processes_before_its_link_goes_down(harness: Harness,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut stops everything at once: no process of the node may run on while its link is
    already down (an agent on the local store, a file, would renew its lease there)."""
    h = harness
    worker = h.popen("n1", ["sleep", "600"])
    wait_inside(h, "n1", worker)
    seen: list[bool] = []
    real = h.link_down

    def link_down(node: str) -> None:
        seen.append(_killed_or_gone(worker.pid))
        real(node)

    monkeypatch.setattr(h, "link_down", link_down)
    try:
        h.crash("n1")
    finally:
        h.revive("n1")
    assert worker.wait(timeout=5) == -9
    assert seen == [True], "a process of the crashed node was still running when its link went down"


def test_teardown_on_failure_removes_everything() -> None:
    netns.require()
    with pytest.raises(RuntimeError, match="boom"), Harness(["n1"], disks=2) as h:
        prefix = h.prefix
        mp = h.tmp / "m"
        h.run("n1", ["mkdir", "-p", str(mp)])
        h.run("n1", ["mount", h.disks[1].device, str(mp)])
        busy = h.popen("n1", ["sleep", "600"], cwd=str(mp))
        daemon = h.popen("n1", ["sh", "-c", "setsid sleep 600 & sleep 600"])
        time.sleep(0.1)
        raise RuntimeError("boom")
    assert busy.poll() is not None and daemon.poll() is not None
    assert leftovers(prefix) == []
    assert not h.tmp.exists()


CHILD = """
import signal, sys, time
from kagemusha.testing.netns import Harness
# Ctrl-C as a terminal delivers it: a process started in the background of a shell without job
# control inherits SIGINT ignored (and Python then keeps it ignored), so a test run started that way
# sent its SIGINT into the void and waited 20 s for a teardown that was never asked for.
signal.signal(signal.SIGINT, signal.default_int_handler)
h = Harness(["n1"]).start()
h.popen("n1", ["sleep", "600"])
with h:
    # NB: said from inside the with block, so the parent's signal never lands half-way into it
    print(h.prefix, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_teardown_on_ctrl_c_and_sigterm(sig: int) -> None:
    netns.require()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        prefix = child.stdout.readline().strip()
        assert prefix.startswith("kg") and leftovers(prefix)
        child.send_signal(sig)
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert leftovers(prefix) == []


def test_leftovers_of_a_killed_owner_are_cleaned_by_the_next_harness() -> None:
    netns.require()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        prefix = child.stdout.readline().strip()
    finally:
        child.kill()  # SIGKILL: no teardown runs
        child.wait()
    assert leftovers(prefix) != []
    assert prefix in netns.cleanup_stale()
    assert leftovers(prefix) == []
