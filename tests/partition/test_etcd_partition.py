"""Real machines, simulated: three etcd members on three node namespaces, agents on two of them.

n3 is the witness (it runs only an etcd member, like CLUSTERPRO's witness server). The group holds a
real floating IP (198.18.0.100) and a service. Both nodes are sampled every 10 ms: the VIP and the
service are never on both at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import psutil
import pytest
import tomli_w

from kagemusha.testing import netns
from kagemusha.testing.etcd import EtcdCluster, require_etcd
from kagemusha.testing.netns import Harness

START_SH = """#!/bin/sh
echo "start $KAGEMUSHA_NODE $CLP_EVENT $(date +%s.%N)" >> "$TRACE"
sleep 3600 > /dev/null 2>&1 &
echo $! > "$SVC/$KAGEMUSHA_NODE.pid"
"""
STOP_SH = """#!/bin/sh
f="$SVC/$KAGEMUSHA_NODE.pid"
[ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; rm -f "$f"
echo "stop $KAGEMUSHA_NODE $CLP_EVENT $(date +%s.%N)" >> "$TRACE"
"""


class Setup:
    def __init__(self, h: Harness, etcd: EtcdCluster, d: Path) -> None:
        self.h, self.etcd, self.d = h, etcd, d
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        (d / "svc").mkdir()
        (d / "logs").mkdir()
        for name, text in (("start.sh", START_SH), ("stop.sh", STOP_SH)):
            (d / name).write_text(text)
            (d / name).chmod(0o755)
        env = {"TRACE": str(d / "trace"), "SVC": str(d / "svc")}
        cfg = {
            # NB: TTL 3 s, not the 1 s default: an etcd leader election (when a member rejoins) makes every
            # member answer "no leader" for ~0.5-1 s; a 1 s lease would fence the healthy owner too.
            "cluster": {"name": "part", "store": etcd.endpoints, "insecure_store": True, "state_dir": str(d / "state"), "startup_wait": 3.0,
                        "heartbeat_interval": 0.3, "heartbeat_timeout": 3.0, "store_timeout": 0.5, "fence_margin": 0.3},
            "nodes": [{"name": n, "address": f"{h.address(n).ip}:7700", "host": n} for n in ("n1", "n2")],
            "groups": [{
                "name": "webotx1", "nodes": ["n1", "n2"], "failback": "manual",
                "resources": [
                    {"name": "fip1", "type": "floating_ip", "address": str(h.vip), "interface": h["n1"].ifname},
                    {"name": "exec1", "type": "exec", "start": "start.sh", "stop": "stop.sh", "env": env},
                ],
            }],
        }
        self.cfg = d / "cluster.toml"
        self.cfg.write_text(tomli_w.dumps(cfg))

    def start(self, node: str) -> None:
        with open(self.d / "logs" / f"{node}.log", "ab") as log:  # the child keeps its own copy
            self.agents[node] = self.h.popen(
                node, [sys.executable, "-m", "kagemusha", "agent", "--config", str(self.cfg), "--node", node],
                stdout=log, stderr=subprocess.STDOUT, env={"KAGEMUSHA_LOG_FORMAT": "json"},
            )

    def log(self, node: str) -> str:
        return (self.d / "logs" / f"{node}.log").read_text(errors="replace")

    def services(self) -> list[str]:
        out = []
        for f in (self.d / "svc").glob("*.pid"):
            try:
                if psutil.Process(int(f.read_text())).status() != psutil.STATUS_ZOMBIE:
                    out.append(f.stem)
            except (OSError, ValueError, psutil.Error):
                continue
        return sorted(out)

    def starts(self) -> list[tuple[str, str]]:
        p = self.d / "trace"
        lines = p.read_text().splitlines() if p.exists() else []
        return [(x.split()[1], x.split()[2]) for x in lines if x.startswith("start")]

    def wait_vip(self, node: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.h.vip_holders() != [node] or self.services() != [node]:
            if time.monotonic() > deadline:
                raise AssertionError(f"VIP/service not on {node}: vip={self.h.vip_holders()} svc={self.services()}\n"
                                     f"--- n1\n{self.log('n1')[-3000:]}\n--- n2\n{self.log('n2')[-3000:]}")
            time.sleep(0.05)

    def wait_joined(self, node: str, timeout: float = 30) -> None:
        """Wait until ``node``'s agent has joined (its member key written). A fault injected while it still
        starts races it: its start-up read of the store meets the fault and the agent exits (under systemd
        the unit restarts it; here nothing does, and nobody takes over)."""
        deadline = time.monotonic() + timeout
        while '"joined the cluster"' not in self.log(node):
            if time.monotonic() > deadline:
                raise AssertionError(f"{node} did not join within {timeout:g} s\n{self.log(node)[-3000:]}")
            time.sleep(0.05)

    def status(self, node: str = "n2") -> str:
        r = self.h.run(node, [sys.executable, "-m", "kagemusha", "status", "--json", "--config", str(self.cfg)], check=False)
        return r.stdout + r.stderr


class Sampler:
    """Samples VIP holders and running services every 10 ms in a thread."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        self.samples: list[tuple[float, list[str], list[str]]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.s.h.vip_holders(), self.s.services()))
            time.sleep(0.01)

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def assert_never_both(self) -> None:
        assert len(self.samples) > 50
        bad = [x for x in self.samples if len(x[1]) > 1 or len(x[2]) > 1]
        assert not bad, f"VIP or service on two nodes at once: {bad[:3]}"


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[Setup]:
    netns.require()
    require_etcd()
    with Harness(["n1", "n2", "n3"]) as h:
        hosts = [str(h.address(n).ip) for n in ("n1", "n2", "n3")]
        # --pre-vote: a member that was cut off does not raise the raft term, so its return does not
        # depose the leader (etcd 3.4 defaults it off; 3.5 on). See docs/fencing.md.
        with EtcdCluster(3, hosts=hosts, nodes=["n1", "n2", "n3"], popen=h.popen, extra_args=["--pre-vote"]) as etcd:
            s = Setup(h, etcd, tmp_path)
            try:
                yield s
            finally:
                for p in s.agents.values():
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait(10)


def test_partitioned_owner_fences_itself_before_the_standby_starts(setup: Setup) -> None:
    s = setup
    s.start("n1")
    s.start("n2")
    s.wait_vip("n1")
    s.wait_joined("n2")
    with Sampler(s) as smp:
        cut = time.time()
        s.h.link_down("n1")
        s.wait_vip("n2", timeout=20)
        took = time.time() - cut
    smp.assert_never_both()
    gone = next(t for t, vips, svcs in smp.samples if "n1" not in vips and "n1" not in svcs)
    up = next(t for t, vips, svcs in smp.samples if vips == ["n2"])
    assert gone < up, "n1 stopped its VIP and service before n2 took them"
    assert '"fenced: stopped every resource"' in s.log("n1")
    assert s.starts() == [("n1", "START"), ("n2", "FAILOVER")]
    print(f"partition: VIP moved to n2 {took:.2f}s after the cut; n1 fenced {up - gone:.2f}s before n2 took over")
    # heal: n1 rejoins; manual failback keeps the group on n2; nothing starts twice
    s.h.link_up("n1")
    s.etcd.wait_healthy(0)
    time.sleep(3.0)
    assert s.h.vip_holders() == ["n2"] and s.services() == ["n2"]
    assert s.starts() == [("n1", "START"), ("n2", "FAILOVER")]
    assert '"up"' in s.status("n1").replace(" ", "")  # n1 is back in the cluster (status from inside n1)


def test_agent_kill9_supervisor_fences_before_standby(setup: Setup) -> None:
    s = setup
    s.start("n1")
    s.start("n2")
    s.wait_vip("n1")
    s.wait_joined("n2")
    # the real agent: the supervisor's child (the harness runs the supervisor through nsenter and sh -c exec)
    sup = psutil.Process(s.agents["n1"].pid)
    kids = [p for p in sup.children(recursive=True) if "agent" in " ".join(p.cmdline())]
    agent = kids[-1]
    with Sampler(s) as smp:
        agent.kill()
        s.wait_vip("n2", timeout=20)
    smp.assert_never_both()
    assert "agent died: fenced the node" in s.log("n1")
    assert s.starts()[-1] == ("n2", "FAILOVER")


def test_all_etcd_members_down_every_node_stops_then_recovers_once(setup: Setup) -> None:
    s = setup
    s.start("n1")
    s.start("n2")
    s.wait_vip("n1")
    s.wait_joined("n2")
    t0 = time.monotonic()
    for i in range(3):
        s.etcd.stop_member(i, kill=True)
    while s.h.vip_holders() or s.services():
        assert time.monotonic() - t0 < 3.0, "resources outlived the lease"
        time.sleep(0.01)
    stopped = time.monotonic() - t0
    assert stopped < 3.0 - 0.3 + 0.05, stopped  # heartbeat_timeout - fence_margin (+ sampling)
    time.sleep(2.0)
    assert not s.h.vip_holders() and not s.services(), "nothing starts without the store"
    assert "cannot renew lease" in s.log("n1") or "lease expired" in s.log("n1")
    for i in range(3):
        s.etcd.start_member(i, wait=False)
    for i in range(3):
        s.etcd.wait_healthy(i)
    deadline = time.monotonic() + 30
    while len(s.h.vip_holders()) != 1:
        assert time.monotonic() < deadline, s.log("n1")[-2000:]
        time.sleep(0.05)
    time.sleep(3.0)
    assert len(s.starts()) == 2, f"each group starts once after the outage: {s.starts()}"
