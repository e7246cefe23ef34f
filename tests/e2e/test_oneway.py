"""The seed's one-way standby, end to end: webotx1 = fip1 + sd1 + exec1 (seed scripts) + domain monitor.

n1 serves domain1 (created on the switchover disk from the seed's domain1.properties, serving
``kagemusha.demo_app``) at the VIP; a client in its own namespace reads and writes through the VIP
while n1 loses power. Service resumes from n2, every write the app acknowledged is on the disk, and
at no sampled moment do both nodes hold the VIP or the mount.
"""

from __future__ import annotations

import sys
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
        t_down = c.crash("n1")  # NB: a request sent just before the link went down may still be n1's
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

    served_after = [r for r in records if r["ok"] and r["t"] > t_down and r["op"] == "get"]
    assert served_after and all("served by n2" in r["body"] for r in served_after), served_after[:3]
    assert "domain1 served by n2" in c.get(vip, APP_PORTS["domain1"])
    gap = outage(records, t_down)
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


def _domain_pids(c: NsCluster, node: str) -> list[int]:
    """Processes of domain1 (by their KAGEMUSHA_DOMAIN tag) inside ``node``."""
    import psutil

    tag = f"{c.mount_point(0)}/domains/domain1"
    pids = []
    for pid in c.h.pids(node):
        try:
            if psutil.Process(pid).environ().get("KAGEMUSHA_DOMAIN") == tag:
                pids.append(pid)
        except psutil.Error:
            continue
    return pids


def _kill9(c: NsCluster, node: str) -> list[int]:
    import os
    import signal

    pids = _domain_pids(c, node)
    assert pids, f"no domain1 process on {node}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def _decisions(c: NsCluster, node: str, kind: str) -> list[str]:
    import json

    out = []
    for line in c.log(node).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("decision") == kind:
            out.append(str(rec.get("reason", "")))
    return out


def test_domain_killed_is_restarted_in_place_then_fails_over(make_cluster: Callable[..., NsCluster]) -> None:
    c = oneway(make_cluster)
    h = c.h
    vip = str(h.vip.ip)
    first = _kill9(c, "n1")

    # restart_limit = 1: the domain monitor sees it dead, the group restarts on n1.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _decisions(c, "n1", "restart"):
        time.sleep(0.1)
    assert _decisions(c, "n1", "restart"), c.logs_tail()
    c.wait_group("webotx1", "online", "n1", timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ("served by n1" in c.get(vip, APP_PORTS["domain1"])):
        time.sleep(0.2)
    assert "domain1 served by n1" in c.get(vip, APP_PORTS["domain1"])
    second = _domain_pids(c, "n1")
    assert second and not set(second) & set(first)
    mon = c.group("webotx1")["monitors"][0]
    assert mon["failures"] >= 2, mon  # status keeps the monitor's failures across the restart
    assert not _decisions(c, "n2", "take")

    # Killed again, past restart_limit: the group fails over to n2 (failover_limit = 1).
    _kill9(c, "n1")
    c.wait_group("webotx1", "online", "n2", timeout=40)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ("served by n2" in c.get(vip, APP_PORTS["domain1"])):
        time.sleep(0.2)
    assert "domain1 served by n2" in c.get(vip, APP_PORTS["domain1"])
    assert h.vip_holders() == ["n2"] and h.disk_holders() == ["n2"]
    assert not _domain_pids(c, "n1")
    assert len(_decisions(c, "n1", "restart")) == 1


def test_disk_unmountable_on_the_standby(make_cluster: Callable[..., NsCluster]) -> None:
    c = oneway(make_cluster)
    h = c.h
    h.hide_disk("n2")  # the device path on n2 is an empty file now: mount fails there
    c.crash("n1")

    # n2 tries: the disk fails, the seed's start.sh runs with CLP_DISK=FAILURE and says so.
    deadline = time.monotonic() + 30
    g = c.group("webotx1", "n2")
    while time.monotonic() < deadline:
        g = c.group("webotx1", "n2")
        if g["state"] == "failed":
            break
        time.sleep(0.2)
    assert g["state"] == "failed", f"{g}\n{c.logs_tail()}"
    assert "sd1" in g["reason"] and "n2" in g["reason"], g["reason"]
    print(f"status of webotx1: {g['state']}: {g['reason']}")
    log2 = c.log("n2")
    assert "ERROR_DISK from FAILOVER" in log2, log2[-3000:]
    assert "FAILOVER1" not in log2  # the domain was never started there
    assert h.vip_holders() == [] and h.disk_holders() == []
    assert not _domain_pids(c, "n2")
    # The group is not retried there: still failed a moment later, nothing held.
    time.sleep(2)
    assert c.group("webotx1", "n2")["state"] == "failed"
    assert h.vip_holders() == [] and h.disk_holders() == []


def test_domain_resource_instead_of_scripts(make_cluster: Callable[..., NsCluster]) -> None:
    """The same group with the ``domain`` resource driving domain1 directly (no admin domain, no scripts)."""
    c = make_cluster()
    h = c.h
    mp = c.mount_point(0)
    c.create_domain(h.disk, mp, "domain1", on="n1", others=["n2"])
    g = c.webotx_group("webotx1", ["n1", "n2"], disk=h.disk, mp=mp, vip=str(h.vip), domain="domain1", scripts="oneway")
    g["resources"][2] = {"name": "dom1", "type": "domain", "domain": "domain1", "domaindir": f"{mp}/domains",
                         "wait_timeout": 5, "start_wait": 30, "start_timeout": 60, "stop_timeout": 30}
    c.groups = [g]
    c.write_config()
    for n in c.nodes:
        c.start(n)
    c.wait_group("webotx1", "online", "n1", timeout=40)
    vip = str(h.vip.ip)
    assert "domain1 served by n1" in c.get(vip, APP_PORTS["domain1"])

    c.crash("n1")
    c.wait_group("webotx1", "online", "n2", timeout=30)
    assert "domain1 served by n2" in c.get(vip, APP_PORTS["domain1"])
    c.revive("n1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {n["name"]: n["state"] for n in c.status()["nodes"]}.get("n1") != "up":
        time.sleep(0.2)

    # A planned move: the domain stops gracefully on n2 (stop-domain --force --wait_timeout 5), starts on n1.
    r = h.run("n1", [sys.executable, "-m", "kagemusha", "group", "move", "webotx1", "--to", "n1", "--config",
                     str(c.dir / "cluster.toml")], check=False, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr + c.logs_tail()
    c.wait_group("webotx1", "online", "n1", timeout=30)
    assert "domain1 served by n1" in c.get(vip, APP_PORTS["domain1"])
    assert not _domain_pids(c, "n2")
    assert h.vip_holders() == ["n1"] and h.disk_holders() == ["n1"]
