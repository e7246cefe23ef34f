"""Client-visible failover outage in the netns harness: kagemusha against keepalived (VRRP), side by side.

Run as root: ``.venv/bin/python bench/failover_netns.py --runs 20`` (default 20 crashes per mode).

Every node runs the same pre-started HTTP service (``python3 -m http.server`` on 0.0.0.0:8080,
its page names the node). A client in its own namespace sends ``GET /`` to the VIP every 10 ms
(new connection each time, 0.2 s timeout). The node holding the VIP loses power
(``Harness.crash``: link down, every process killed, its addresses gone), after a random wait of
0-1 s (seeded, ``--seed``: the crash falls at a random phase of heartbeats and adverts); the outage of a run
is the time from the client's last success before the crash to its first success after it.
The crashed node then comes back (services restarted) and the next run crashes whoever is
active then (no failback in any mode, so runs alternate between n1 and n2).

Modes:

- ``kagemusha-default``: one group, a ``floating_ip`` resource only (the service is pre-started,
  as keepalived's is), the config's default timers (recorded with the results as the agents read them).
- ``kagemusha-keepalived-timers``: the same with timers equal to keepalived's defaults:
  heartbeat_interval 1 s (= ``advert_int 1``) and heartbeat_timeout 3.6 s. A VRRP backup
  declares the master dead after ``master_down_interval = 3 * advert_int + skew_time`` with
  ``skew_time = (256 - priority) / 256 * advert_int``; for the default backup priority 100
  that is 3 + 0.61 = 3.61 s. kagemusha's lease TTL plays that role. The config timing rule
  holds: 1 + 2 * 0.25 (store_timeout) + 0.0625 + 0.15 (fence_margin) = 1.71 <= 3.6.
- ``kagemusha-rule-bound``: the default timers with the lease TTL cut to the timing rule's bound
  (0.84 s instead of 1.0 s): what the default's margin for a loaded machine costs in outage.
- ``kagemusha-tuned``: 0.1 s heartbeats, the lease lasting three of them (heartbeat_timeout 0.3, as VRRP's
  backup waits three adverts; store_timeout 0.05, fence_margin 0.075: the timing rule needs 0.2875), and a
  duplicate-address check listening 50 ms (``probe_timeout 0.05``) instead of 100, against
- ``keepalived-fast``: keepalived with VRRPv3 and ``advert_int 0.1`` (master down after 0.361 s).
- ``kagemusha-seed``: the seed's one-way group as an operator runs it: ``fip1``, ``sd1`` (a loop-device
  disk) and ``exec1``, whose ``start.sh`` starts the application with ``kagemusha domain start-domain``
  (the service is *not* pre-started: it starts on failover); default timers; tests/e2e's client (GET and
  PUT every 10 ms to the VIP, port 80): issue 12's headline figure.
- ``keepalived``: Debian's keepalived 2.2.x, one ``vrrp_instance`` per node, ``advert_int 1``,
  priority 100 on both (so the skew is the default backup's), ``state BACKUP`` + ``nopreempt``
  (no failback, like kagemusha's ``failback = "manual"``), unicast peers so VRRP stays inside
  198.18.0.0/15, started as ``keepalived -n -l -D -P -f conf -p pid -r vrrp_pid -c checkers_pid``
  inside each node.

Also measured: a planned ``kagemusha group move`` (default timers), a few runs.

Each kagemusha run is broken down from the survivor's log (take decided, VIP added, group online).
``--keep DIR`` keeps the agents' logs; ``KAGEMUSHA_BENCH_RESULTS=/tmp/x`` writes a trial run's results
elsewhere than ``bench/results/``.

Prints each run and min/median/p90/max per mode (p99 only from 100 runs), with the kagemusha/keepalived ratios, and
writes ``bench/results/failover_netns.json``. Never fails on a time; every wait is bounded.
Only namespaces of its own harness and addresses in 198.18.0.0/15 (plus loopback) are used;
only processes it started are stopped, by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import tomli_w

from kagemusha.testing.netns import Harness, unavailable_reason

HTTP_PORT = 8080
#: Each crash waits a random 0..PHASE_JITTER_S s first (seeded: ``--seed``), so that it falls at a random phase
#: of the heartbeats and VRRP adverts (the slowest, keepalived's, are 1 s apart). Without it the runs' fixed waits
#: locked the crash to nearly the same phase of keepalived's adverts run after run: its 20 outages clustered at
#: 2.6-2.9 s and 3.4-3.6 s instead of spreading over 2.6-3.6 s, and its median moved by 0.7 s between two runs.
PHASE_JITTER_S = 1.0
_RNG = random.Random(0)

CLIENT = r'''
import http.client, json, sys, threading, time, os
vip, port, out, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
limit = float(sys.argv[5])
f = open(out, "a", buffering=1)
lock = threading.Lock()
def one():
    ok, body = False, ""
    try:
        c = http.client.HTTPConnection(vip, port, timeout=2.0)
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read().decode(errors="replace").strip()
        ok = r.status == 200
        c.close()
    except Exception as e:
        body = type(e).__name__
    with lock:  # NB: the time a request ended: the first success after a failure is the service back
        f.write(json.dumps([time.time(), ok, body]) + "\n")
# A request every 10 ms, each in a thread of its own, whether or not the earlier ones have answered:
# a sequential client would send nothing while a request hangs, and round the outage up to its timeout.
t_end = time.monotonic() + limit
nxt = time.monotonic()
while time.monotonic() < t_end and not os.path.exists(stop):
    threading.Thread(target=one, daemon=True).start()
    nxt += 0.01
    time.sleep(max(0.0, nxt - time.monotonic()))
'''


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._results import commit, metadata, path_of, save, summary


def log_phases(log: Path, since: float, t_last: float) -> dict[str, float]:
    """From the survivor's log (JSON lines): when it decided to take the group, added the VIP, had each
    resource started (the exec resource: its start script returned) and the group online, each in seconds
    after ``t_last`` (the client's last success before the failure)."""
    out: dict[str, float] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
            at = datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if at < since - 0.01:  # ms resolution of the log
            continue
        msg = rec.get("msg", "")
        if "decided" not in out and msg == "decision" and rec.get("decision") == "take":
            out["decided"] = at - t_last
        elif "decided" in out and "vip_added" not in out and msg.startswith("floating_ip") and msg.endswith(
                " added"):
            out["vip_added"] = at - t_last
        elif "decided" in out and "online" not in out and msg == "group online":
            out["online"] = at - t_last
        elif "decided" in out and "online" not in out and msg == "resource started" and rec.get("resource"):
            out.setdefault(f"{rec['resource']} started", at - t_last)
    return out


class Bench:
    def __init__(self, h: Harness, dir: Path) -> None:
        self.h = h
        self.dir = dir
        self.vip = h.vip
        self.http: dict[str, subprocess.Popen[bytes]] = {}
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.client: subprocess.Popen[bytes] | None = None
        self.client_out = dir / "client.jsonl"
        self.client_stop = dir / "client.stop"

    # -- processes (all started here, stopped here by pid) --------------------------------

    def start_http(self, node: str) -> None:
        www = self.dir / "www" / node
        www.mkdir(parents=True, exist_ok=True)
        (www / "index.html").write_text(f"served by {node}\n")
        self.http[node] = self.h.popen(
            node, [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "0.0.0.0"], cwd=www,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_http(self, node: str, timeout: float = 10) -> None:
        ip = str(self.h.address(node).ip)
        deadline = time.monotonic() + timeout
        code = ("import sys,urllib.request\n"
                "urllib.request.urlopen(sys.argv[1], timeout=1).read()")
        while time.monotonic() < deadline:
            r = self.h.python("client", code, f"http://{ip}:{HTTP_PORT}/", check=False, timeout=5)
            if r.returncode == 0:
                return
            time.sleep(0.1)

    def start_client(self) -> None:
        self.client_stop.unlink(missing_ok=True)
        self.client = self.h.popen("client", [sys.executable, "-c", CLIENT, str(self.vip.ip), str(HTTP_PORT),
                                              str(self.client_out), str(self.client_stop), "3600"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_client(self) -> None:
        self.client_stop.touch()
        if self.client is not None:
            try:
                self.client.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.client.pid, signal.SIGKILL)
                self.client.wait(5)
        self.client = None

    def records(self) -> list[tuple[float, bool, str]]:
        out = []
        try:
            text = self.client_out.read_text()
        except OSError:
            return []
        for line in text.splitlines():
            try:
                t, ok, body = json.loads(line)
            except ValueError:
                continue
            out.append((float(t), bool(ok), str(body)))
        return out

    def stop_procs(self, procs: dict[str, subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(sig)
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        procs.clear()

    # -- observing --------------------------------------------------------------------------

    def served_by(self, node: str, after: float, timeout: float) -> float | None:
        """Wall time of the client's first success from ``node`` after ``after`` (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, ok, body in self.records():
                if t > after and ok and body == f"served by {node}":
                    return t
            time.sleep(0.05)
        return None

    def outage(self, t_crash: float, t_back: float) -> float:
        recs = self.records()
        before = [t for t, ok, _ in recs if ok and t <= t_crash]
        return t_back - (max(before) if before else t_crash)

    def gap(self, t0: float, t_back: float) -> float:
        """The longest wait between two client successes from the last one before ``t0`` to ``t_back``.

        For a planned move: the ``group move`` command itself (a CLI run) comes before any outage, so the
        outage is the gap the client saw, not the time from typing the command.
        """
        oks = sorted(t for t, ok, _ in self.records() if ok and t <= t_back)
        before = [t for t in oks if t <= t0]
        window = [max(before) if before else t0] + [t for t in oks if t > t0] + [t_back]
        return max(b - a for a, b in itertools.pairwise(window))

    def holder(self) -> str | None:
        holders = self.h.vip_holders()
        return holders[0] if len(holders) == 1 else None

    # -- kagemusha ----------------------------------------------------------------------------

    def kagemusha_config(self, name: str, timers: dict[str, float]) -> Path:
        """The bench's cluster.toml; ``timers`` overrides the config's defaults (empty: the defaults)."""
        data = {
            "cluster": {"name": name, "store": f"local:{self.dir / name / 'store.db'}",
                        "state_dir": str(self.dir / name / "state"), "startup_wait": 1.0, **timers},
            "nodes": [{"name": n, "address": f"{self.h.address(n).ip}:7700"} for n in self.h.nodes],
            "groups": [{"name": "web", "nodes": list(self.h.nodes), "failback": "manual",
                        "resources": [{"name": "fip1", "type": "floating_ip", "address": str(self.vip),
                                       "interface": "eth0", **FIP_PARAMS.get(name, {})}]}],
        }
        (self.dir / name).mkdir(parents=True, exist_ok=True)
        path = self.dir / name / "cluster.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    def start_agent(self, node: str, cfg: Path) -> None:
        log = open(cfg.parent / f"{node}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.daemons[node] = self.h.popen(
                node, [sys.executable, "-m", "kagemusha", "agent", "--config", str(cfg), "--node", node],
                env={"KAGEMUSHA_LOG_FORMAT": "json"}, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def status(self, cfg: Path, node: str) -> dict[str, Any]:
        r = self.h.run(node, [sys.executable, "-m", "kagemusha", "status", "--config", str(cfg), "--json"],
                       check=False, timeout=30)
        try:
            data: dict[str, Any] = json.loads(r.stdout)
        except ValueError:
            return {}
        return data

    def wait_members(self, cfg: Path, node: str, want: set[str], timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(cfg, node)
            up = {n["name"] for n in st.get("nodes", []) if n["state"] == "up"}
            g = (st.get("groups") or [{}])[0]
            if up >= want and g.get("state") == "online":
                return True
            time.sleep(0.2)
        return False

    def crash_node(self, node: str) -> None:
        self.h.crash(node)
        p = self.daemons.pop(node, None)
        self.http.pop(node, None)
        if p is not None:
            p.wait(5)

    def restart_node(self, node: str, cfg: Path) -> None:
        self.h.revive(node)
        self.start_http(node)
        self.wait_http(node)
        self.start_agent(node, cfg)

    def failure_runs(self, mode: str, cfg: Path | None, nodes: list[str], runs: int, result: dict[str, Any], *,
                     fail: Callable[[str], None], recover: Callable[[str], None],
                     what: str = "crash", timeout: float = 30.0) -> None:
        """``runs`` times: fail the node holding the VIP, measure the client's outage, bring the node back.

        ``cfg``: kagemusha's config (the survivor's log gives the phases; the members are awaited after a
        recovery); None for keepalived, whose ``recover`` waits for its own state.
        """
        for i in range(runs):
            active = self.holder()
            if active is None:
                time.sleep(1.0)
                active = self.holder()
            if active is None:
                result["failed_runs"] += 1
                continue
            survivor = next(n for n in nodes if n != active)
            time.sleep(_RNG.uniform(0, PHASE_JITTER_S))
            t_fail = time.time()
            fail(active)
            t_back = self.served_by(survivor, t_fail, timeout=timeout)
            if t_back is None:
                print(f"{mode} run {i + 1}: no service from {survivor} within {timeout:g} s", flush=True)
                result["failed_runs"] += 1
            else:
                out = self.outage(t_fail, t_back)
                result["crash_outage_s"].append(out)
                ph = log_phases(cfg.parent / f"{survivor}.log", t_fail, t_back - out) if cfg else {}
                if cfg:
                    result.setdefault("crash_phases", []).append(ph)
                print(f"{mode} run {i + 1:2d}: {what} of {active}: outage {out:6.3f} s  "
                      + _phase_text(ph), flush=True)
            recover(active)
            if cfg is not None:
                self.wait_members(cfg, survivor, set(nodes), timeout=40)
                time.sleep(0.5)

    def run_kagemusha(self, mode: str, timers: dict[str, float], runs: int, moves: int = 0) -> dict[str, Any]:
        cfg = self.kagemusha_config(mode, timers)
        nodes = list(self.h.nodes)
        for n in nodes:
            self.start_http(n)
        for n in nodes:
            self.wait_http(n)
        for n in nodes:
            self.start_agent(n, cfg)
        result: dict[str, Any] = {**effective_timers(cfg), "floating_ip": fip_params(mode), "crash_outage_s": [],
                                  "move_outage_s": [], "move_command_to_service_s": [], "failed_runs": 0}
        try:
            if not self.wait_members(cfg, nodes[0], set(nodes), timeout=40):
                print(f"{mode}: cluster did not come up", flush=True)
                result["failed_runs"] = runs
                return result
            self.start_client()
            time.sleep(1.0)
            self.failure_runs(mode, cfg, nodes, runs, result, fail=self.crash_node,
                              recover=lambda n: self.restart_node(n, cfg))
            for i in range(moves):
                active = self.holder()
                if active is None:
                    break
                target = next(n for n in nodes if n != active)
                t0 = time.time()
                r = self.h.run(target, [sys.executable, "-m", "kagemusha", "group", "move", "web", "--to", target,
                                        "--config", str(cfg)], check=False, timeout=60)
                t_back = self.served_by(target, t0, timeout=30)
                if r.returncode != 0 or t_back is None:
                    print(f"{mode} move {i + 1}: failed ({r.returncode}): {r.stderr.strip()[-300:]}", flush=True)
                    continue
                out = self.gap(t0, t_back)
                result["move_outage_s"].append(out)
                result["move_command_to_service_s"].append(t_back - t0)
                ph = log_phases(cfg.parent / f"{target}.log", t0, t_back - out)
                result.setdefault("move_phases", []).append(ph)
                print(f"{mode} move {i + 1}: {active} -> {target}: outage {out:6.3f} s (command to service "
                      f"{t_back - t0:.3f} s)  " + _phase_text(ph), flush=True)
                time.sleep(0.5)
        finally:
            self.stop_client()
            self.stop_procs(self.daemons)
            self.stop_procs(self.http)
            self.client_out.unlink(missing_ok=True)
        return result

    # -- keepalived ---------------------------------------------------------------------------

    def keepalived_conf(self, node: str, advert: float = 1.0) -> Path:
        me = self.h.address(node).ip
        peers = "\n".join(f"        {self.h.address(n).ip}" for n in self.h.nodes if n != node)
        conf = f"""global_defs {{
    router_id {node}
    vrrp_version {3 if advert < 1 else 2}
    script_user root
    enable_script_security
}}
vrrp_instance VI_1 {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int {advert:g}
    unicast_src_ip {me}
    unicast_peer {{
{peers}
    }}
    virtual_ipaddress {{
        {self.vip} dev eth0
    }}
}}
"""
        d = self.dir / "keepalived" / node
        d.mkdir(parents=True, exist_ok=True)
        (d / "keepalived.conf").write_text(conf)
        return d

    def start_keepalived(self, node: str, advert: float = 1.0) -> None:
        d = self.keepalived_conf(node, advert)
        # A crash is a reboot, and a reboot clears /run: without this, the restarted keepalived found the
        # pid of its killed VRRP child (a zombie until init reaped it) in vrrp.pid, said "daemon is
        # already running" and exited; the node came back without VRRP and the next crash of the other
        # node had nobody to take over (19 of 20 keepalived-fast runs: "no service within 30 s").
        for pidfile in ("keepalived.pid", "vrrp.pid", "checkers.pid"):
            (d / pidfile).unlink(missing_ok=True)
        log = open(d / "console.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.daemons[node] = self.h.popen(
                node, ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog",
                       f"--use-file={d / 'keepalived.conf'}", f"--pid={d / 'keepalived.pid'}",
                       f"--vrrp_pid={d / 'vrrp.pid'}", f"--checkers_pid={d / 'checkers.pid'}"],
                stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def wait_keepalived_state(self, node: str, state: str, since: int, timeout: float = 15) -> bool:
        log = self.dir / "keepalived" / node / "console.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = log.read_bytes()[since:].decode(errors="replace")
            except OSError:
                text = ""
            if f"Entering {state} STATE" in text:
                return True
            time.sleep(0.1)
        return False

    def expect_keepalived_state(self, node: str, state: str, since: int) -> None:
        """Wait until ``node``'s keepalived enters ``state``; raise with its log's tail when it does not."""
        if not self.wait_keepalived_state(node, state, since):
            log = self.dir / "keepalived" / node / "console.log"
            tail = log.read_bytes()[since:].decode(errors="replace").splitlines()[-15:] if log.exists() else []
            raise RuntimeError(f"keepalived on {node} did not enter {state} within 15 s; its log ends:\n"
                               + "\n".join(tail))

    def run_keepalived(self, mode: str, runs: int, advert: float = 1.0) -> dict[str, Any]:
        nodes = list(self.h.nodes)
        for n in nodes:
            self.start_http(n)
        for n in nodes:
            self.wait_http(n)
        result: dict[str, Any] = {"advert_int": advert, "vrrp_version": 3 if advert < 1 else 2, "priority": 100, "crash_outage_s": [], "failed_runs": 0}
        try:
            # One after the other, as a cluster is brought up: the first becomes master, the others hear
            # its adverts and stay backup (started at once, both became master for a moment).
            for n in nodes:
                self.start_keepalived(n, advert)
                self.expect_keepalived_state(n, "MASTER" if n == nodes[0] else "BACKUP", 0)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.holder() is None:
                time.sleep(0.1)
            self.start_client()
            time.sleep(1.0)

            def back(node: str) -> None:
                self.h.revive(node)
                self.start_http(node)
                self.wait_http(node)
                log = self.dir / "keepalived" / node / "console.log"
                since = log.stat().st_size if log.exists() else 0
                self.start_keepalived(node, advert)
                self.expect_keepalived_state(node, "BACKUP", since)
                time.sleep(1.5)  # it has heard the master's adverts (15 of them at least) and stays backup

            self.failure_runs(mode, None, nodes, runs, result, fail=self.crash_node, recover=back)
        finally:
            self.stop_client()
            self.stop_procs(self.daemons)
            self.stop_procs(self.http)
            self.client_out.unlink(missing_ok=True)
        return result


class EtcdBench(Bench):
    """kagemusha on a three-member etcd (n1, n2 and the witness n3); agents on n1 and n2 only.

    ``partition``: instead of a crash the active node's link is cut (its agent keeps running and must
    fence itself); the link comes back after the survivor serves.
    """

    TIMERS: ClassVar[dict[str, float]] = {"heartbeat_interval": 0.3, "heartbeat_timeout": 3.0, "store_timeout": 0.5, "fence_margin": 0.3}

    def __init__(self, h: Harness, dir: Path, etcd: Any) -> None:
        super().__init__(h, dir)
        self.etcd = etcd

    def kagemusha_config(self, name: str, timers: dict[str, float]) -> Path:
        data = {
            "cluster": {"name": name, "store": self.etcd.endpoints, "insecure_store": True, "state_dir": str(self.dir / name / "state"),
                        "startup_wait": 1.0, **self.TIMERS},
            "nodes": [{"name": n, "address": f"{self.h.address(n).ip}:7700", "host": n} for n in ("n1", "n2")],
            "groups": [{"name": "web", "nodes": ["n1", "n2"], "failback": "manual",
                        "resources": [{"name": "fip1", "type": "floating_ip", "address": str(self.vip),
                                       "interface": "eth0", **FIP_PARAMS.get(name, {})}]}],
        }
        (self.dir / name).mkdir(parents=True, exist_ok=True)
        path = self.dir / name / "cluster.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    def run_etcd(self, mode: str, runs: int, partition: bool) -> dict[str, Any]:
        cfg = self.kagemusha_config(mode, {})
        nodes = ["n1", "n2"]
        for n in nodes:
            self.start_http(n)
        for n in nodes:
            self.wait_http(n)
        for n in nodes:
            self.start_agent(n, cfg)
        result: dict[str, Any] = {**self.TIMERS, "store": "etcd, 3 members (n1, n2, witness n3)",
                                  "failure": "partition (link cut)" if partition else "crash",
                                  "crash_outage_s": [], "failed_runs": 0}
        try:
            if not self.wait_members(cfg, "n1", set(nodes), timeout=40):
                print(f"{mode}: cluster did not come up", flush=True)
                result["failed_runs"] = runs
                return result
            self.start_client()
            time.sleep(1.0)
            def cut(node: str) -> None:
                self.h.link_down(node)

            def heal(node: str) -> None:
                self.h.revive(node)
                self.etcd.wait_healthy(int(node[1:]) - 1)

            def back(node: str) -> None:
                self.h.revive(node)  # link up first: the member must reach its peers
                self.etcd.start_member(int(node[1:]) - 1)
                self.restart_node(node, cfg)

            if partition:
                self.failure_runs(mode, cfg, nodes, runs, result, fail=cut, recover=heal, what="partition", timeout=40)
            else:
                self.failure_runs(mode, cfg, nodes, runs, result, fail=self.crash_node, recover=back, timeout=40)
        finally:
            self.stop_client()
            self.stop_procs(self.daemons)
            self.stop_procs(self.http)
        return result


#: The kagemusha modes on the local store: the timers each sets (empty: the config's defaults).
KAGEMUSHA_MODES: dict[str, dict[str, float]] = {
    "kagemusha-default": {},
    # keepalived's defaults: advert_int 1 s; a backup of priority 100 declares the master dead after 3.61 s.
    "kagemusha-keepalived-timers": {"heartbeat_interval": 1.0, "heartbeat_timeout": 3.6},
    # 0.1 s heartbeats, against keepalived-fast (VRRPv3, advert_int 0.1 s: master down after 0.361 s): the
    # lease lasts 3 heartbeats (as VRRP's backup waits 3 adverts), store requests are bounded at 50 ms (the
    # local store answers in a few ms). The timing rule: 0.1 + 2 * 0.05 + 0.0125 + 0.075 = 0.2875 <= 0.3.
    "kagemusha-tuned": {"heartbeat_interval": 0.1, "heartbeat_timeout": 0.3, "store_timeout": 0.05,
                        "fence_margin": 0.075},
}
#: floating_ip parameters a mode sets (else the driver's defaults): the tuned mode listens 50 ms for an
#: answer to its duplicate-address probes (two probes 25 ms apart) instead of 100 ms, a LAN's ARP reply
#: taking well under a millisecond (docs/resources.md).
FIP_PARAMS: dict[str, dict[str, float]] = {"kagemusha-tuned": {"probe_timeout": 0.05}}


def _rule_bound() -> dict[str, float]:
    """The default timers but the lease TTL, cut to the shortest the timing rule allows (rounded up to 10 ms)."""
    from kagemusha.config._load import ClusterSection, timing_need

    f = ClusterSection.model_fields
    need = timing_need(f["heartbeat_interval"].default, f["store_timeout"].default, f["fence_margin"].default)
    return {"heartbeat_timeout": math.ceil(need * 100 - 1e-6) / 100}


# What the default lease TTL costs: the default timers with the TTL at the timing rule's bound (0.84 s with
# the defaults' 0.15 + 2 * 0.25 + 0.0375 + 0.15), i.e. with no margin left for a loaded machine.
KAGEMUSHA_MODES["kagemusha-rule-bound"] = _rule_bound()
#: keepalived modes: advert_int (s); below 1 s it needs VRRPv3 (centisecond adverts).
KEEPALIVED_MODES: dict[str, float] = {"keepalived": 1.0, "keepalived-fast": 0.1}


def fip_params(mode: str) -> dict[str, float]:
    """The duplicate-address check and announcements of a mode's floating IP (its settings and the defaults)."""
    from kagemusha.resources.floating_ip import FloatingIPParams

    p = FloatingIPParams.model_validate({"address": "198.18.0.100/24", "interface": "eth0", **FIP_PARAMS.get(mode, {})})
    return {k: getattr(p, k) for k in ("probe_count", "probe_timeout", "arp_count", "arp_interval")}


def effective_timers(cfg: Path) -> dict[str, float]:
    """The timers the agents run with, read back through the config loader (defaults included)."""
    from kagemusha.config import load_config

    c = load_config(cfg).cluster
    return {"heartbeat_interval": c.heartbeat_interval, "heartbeat_timeout": c.heartbeat_timeout,
            "store_timeout": c.store_timeout, "fence_margin": c.fence_margin}


def _phase_text(ph: dict[str, float]) -> str:
    names = {"decided": "take decided", "vip_added": "VIP added", "online": "group online"}
    return ", ".join(f"{names.get(k, k)} +{v:.3f}" for k, v in sorted(ph.items(), key=lambda kv: kv[1]))


def phase_medians(phases: list[dict[str, float]]) -> dict[str, float]:
    """The median of each phase over the runs that logged it (seconds after the client's last success)."""
    keys = sorted({k for ph in phases for k in ph})
    return {k: statistics.median([ph[k] for ph in phases if k in ph]) for k in keys}


def run_etcd_mode(tmp: str, mode: str, runs: int) -> dict[str, Any]:
    from kagemusha.testing.etcd import EtcdCluster

    with Harness(["n1", "n2", "n3"], disks=0) as h:
        hosts = [str(h.address(n).ip) for n in ("n1", "n2", "n3")]
        # --pre-vote: a member that was cut off does not raise the raft term, so its return does not
        # depose the leader (etcd 3.4 defaults it off; 3.5 on). See docs/fencing.md.
        with EtcdCluster(3, hosts=hosts, nodes=["n1", "n2", "n3"], popen=h.popen, extra_args=["--pre-vote"]) as etcd:
            b = EtcdBench(h, Path(tmp) / mode, etcd)
            b.dir.mkdir(parents=True)
            return b.run_etcd(mode, runs, partition=mode.endswith("partition"))


def run_seed_mode(tmp: str, runs: int) -> dict[str, Any]:
    """``kagemusha-seed``: the seed's one-way group (fip1, sd1 on a loop disk, exec1 whose ``start.sh`` runs
    ``kagemusha domain start-domain``, serving domain1's app), default timers; the service starts on
    failover. The client (tests/e2e's: GET / and PUT /kv every 10 ms to the VIP, port 80) measures the outage
    from its last success before the crash to its first success from the survivor."""
    from tests.e2e._cluster import APP_PORTS, Client, NsCluster

    result: dict[str, Any] = {"group": "seed one-way: fip1 + sd1 (loop disk) + exec1 (start.sh -> kagemusha domain)",
                              "crash_outage_s": [], "failed_runs": 0}
    with Harness(["n1", "n2"], disks=1, disk_size_mb=32) as h:
        c = NsCluster(h, Path(tmp) / "kagemusha-seed")
        mp = c.mount_point(0)
        c.create_domain(h.disk, mp, "domain1", on="n1", others=["n2"])
        c.groups = [c.webotx_group("webotx1", ["n1", "n2"], disk=h.disk, mp=mp, vip=str(h.vip), domain="domain1",
                                   scripts="oneway")]
        result.update(effective_timers(c.write_config()))
        for n in c.nodes:
            c.start(n)
        client: Client | None = None
        try:
            c.wait_group("webotx1", "online", "n1", timeout=60)
            client = Client(h, c.dir, str(h.vip.ip), APP_PORTS["domain1"], limit=3600)
            time.sleep(1.5)
            active = "n1"
            for i in range(runs):
                survivor = "n2" if active == "n1" else "n1"
                time.sleep(_RNG.uniform(0, PHASE_JITTER_S))
                t_crash = time.time()
                c.crash(active)
                deadline = time.monotonic() + 60
                back: float | None = None
                while back is None and time.monotonic() < deadline:
                    recs = client.records()
                    later = [r for r in recs if r["op"] == "get" and r["ok"] and r["t"] > t_crash
                             and f"served by {survivor}" in r.get("body", "")]
                    back = min(r["done"] for r in later) if later else None
                    time.sleep(0.05)
                if back is None:
                    print(f"kagemusha-seed run {i + 1}: no service from {survivor} within 60 s", flush=True)
                    result["failed_runs"] += 1
                else:
                    before = [r["done"] for r in client.records() if r["ok"] and r["done"] <= t_crash]
                    t_last = max(before) if before else t_crash
                    out = back - t_last
                    result["crash_outage_s"].append(out)
                    c.wait_group("webotx1", "online", survivor, timeout=60)  # the log has every phase now
                    ph = log_phases(c.dir / "logs" / f"{survivor}.log", t_crash, t_last)
                    ph["client back"] = out
                    result.setdefault("crash_phases", []).append(ph)
                    print(f"kagemusha-seed run {i + 1:2d}: crash of {active}: outage {out:6.3f} s  " + _phase_text(ph),
                          flush=True)
                c.revive(active)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    up = {n["name"] for n in c.status(survivor).get("nodes", []) if n["state"] == "up"}
                    if up >= {"n1", "n2"}:
                        break
                    time.sleep(0.2)
                c.wait_group("webotx1", "online", survivor, timeout=60)
                time.sleep(1.5)
                active = survivor
        finally:
            if client is not None:
                client.stop()
            c.stop_all()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="crashes per mode (default 20)")
    ap.add_argument("--moves", type=int, default=5, help="planned group moves (default 5)")
    ap.add_argument("--modes", default="kagemusha-seed,kagemusha-default,kagemusha-rule-bound,"
                                       "kagemusha-keepalived-timers,keepalived,"
                                       "kagemusha-tuned,keepalived-fast,kagemusha-etcd-crash,kagemusha-etcd-partition",
                    help="comma-separated subset of the modes")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (agents' logs, configs) instead of a "
                                                 "temporary directory")
    ap.add_argument("--seed", type=int, default=1, help="seed of the crashes' random phase (recorded)")
    args = ap.parse_args()
    _RNG.seed(args.seed)
    code = commit()  # the code that runs, before the checkout can move on
    reason = unavailable_reason()
    if reason is None and not Path("/usr/sbin/keepalived").exists() and "keepalived" in args.modes:
        reason = "keepalived is not installed (Debian: apt-get install keepalived; scripts/bootstrap does)"
    if reason is not None:
        print(f"failover_netns: cannot run: {reason}", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, Any] = {}
    started = time.time()
    with contextlib.ExitStack() as stack:
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            tmp = str(Path(args.keep).resolve())
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="kg-bench-netns-"))
        for mode in modes:
            if mode == "kagemusha-seed":
                results[mode] = run_seed_mode(tmp, args.runs)
                results[mode]["crash_outage"] = summary(results[mode]["crash_outage_s"])
                if results[mode].get("crash_phases"):
                    results[mode]["crash_phase_medians"] = phase_medians(results[mode]["crash_phases"])
                continue
            if mode.startswith("kagemusha-etcd-"):
                results[mode] = run_etcd_mode(tmp, mode, args.runs)
                results[mode]["crash_outage"] = summary(results[mode]["crash_outage_s"])
                continue
            with Harness(["n1", "n2"], disks=0) as h:
                b = Bench(h, Path(tmp) / mode)
                b.dir.mkdir(parents=True)
                if mode in KAGEMUSHA_MODES:
                    results[mode] = b.run_kagemusha(mode, KAGEMUSHA_MODES[mode], args.runs,
                                                    moves=args.moves if mode == "kagemusha-default" else 0)
                elif mode in KEEPALIVED_MODES:
                    results[mode] = b.run_keepalived(mode, args.runs, KEEPALIVED_MODES[mode])
                else:
                    print(f"unknown mode {mode}", file=sys.stderr)
                    continue
            results[mode]["crash_outage"] = summary(results[mode]["crash_outage_s"])
            if results[mode].get("crash_phases"):
                results[mode]["crash_phase_medians"] = phase_medians(results[mode]["crash_phases"])
            if results[mode].get("move_outage_s"):
                results[mode]["move_outage"] = summary(results[mode]["move_outage_s"])
                results[mode]["move_phase_medians"] = phase_medians(results[mode].get("move_phases", []))

    print()
    print(f"client-visible outage after a crash of the active node (s), {args.runs} runs per mode")
    print(f"{'mode':30s} {'n':>3s} {'min':>7s} {'median':>7s} {'p90':>7s} {'max':>7s}")
    for mode in modes:
        s = results.get(mode, {}).get("crash_outage")
        if s:
            p90 = f"{s['p90']:7.3f}" if "p90" in s else f"{'-':>7s}"
            print(f"{mode:30s} {s['n']:3d} {s['min']:7.3f} {s['median']:7.3f} {p90} {s['max']:7.3f}")
    # Ratios only between modes of this one run (side by side on the same machine state); the tuned mode is
    # compared with keepalived's 0.1 s adverts, the others with keepalived's defaults.
    for mode in modes:
        pair = "keepalived-fast" if mode == "kagemusha-tuned" else "keepalived"
        s = results.get(mode, {}).get("crash_outage")
        ka = results.get(pair, {}).get("crash_outage")
        if s and ka and mode not in KEEPALIVED_MODES:
            ratio = {k: s[k] / ka[k] for k in ("min", "median", "p90", "max") if k in s and k in ka and ka[k] > 0}
            results[mode][f"ratio_to_{pair.replace('-', '_')}_same_run"] = ratio
            print(f"ratio {mode}/{pair}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items()))
    for mode in modes:
        ph = results.get(mode, {}).get("crash_phase_medians")
        if ph:
            print(f"{mode}: medians after the client's last success: " + _phase_text(ph))
    mv = results.get("kagemusha-default", {}).get("move_outage")
    if mv:
        print(f"planned `group move` (default timers), {mv['n']} runs: min {mv['min']:.3f} median {mv['median']:.3f}"
              f" max {mv['max']:.3f} s (the client's longest gap)")
    seconds = round(time.time() - started, 1)
    # Each mode is written whole with its own record (commit, date, machine, N, command, tool versions);
    # a run of some modes keeps the other modes exactly as an earlier run wrote them.
    for mode, part in results.items():
        tools = ["keepalived"] if mode in KEEPALIVED_MODES else ["etcd"] if mode.startswith("kagemusha-etcd-") else []
        part = {**part, "run_seconds_all_modes": seconds, "modes_in_this_run": modes,
                "crash_phase_jitter_s": PHASE_JITTER_S, "seed": args.seed}
        save("failover_netns", "modes", {mode: part}, metadata(args.runs, tools=tools, commit_info=code), about={
            "client": "GET / to the VIP every 10 ms, each in a thread of its own (new connection, 2 s timeout)",
            "outage": "last client success before the crash to first success from the survivor",
            "move_outage": "planned move: the client's longest gap between two successes, from the last success "
                           "before the `group move` command to the first success from the target "
                           "(move_command_to_service_s: from the command, CLI start-up included)",
            "phases": "crash_phases/move_phases: from the survivor's (target's) log, seconds after the client's last "
                      "success: take decided, VIP added, group online",
            "etcd": "etcd modes: TTL 3 s (see docs/fencing.md: above an etcd leader election), so not comparable 1:1 "
                    "with the local store's 1 s default",
        })
    print(f"written to {path_of('failover_netns')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
