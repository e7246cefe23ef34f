"""A kagemusha cluster inside the netns harness: agents in node namespaces, the seed's groups, a client.

Layout (``NsCluster.dir``, a temporary directory every namespace sees: the node mount namespaces
are private *copies* of the host's, so a path under /tmp is the same file in every node)::

    store.db            the local (SQLite) store every agent uses
    cluster.toml        the config written by ``write_config``
    n1/registry, ...    each node's domain registry (KAGEMUSHA_DOMAIN_REGISTRY)
    data1, data2        mount points of the harness disks (the seed's /data1, /data2)
    webotx1/start.sh    the seed's scripts: otxadmin -> kagemusha domain, /dataN -> these mount points
    logs/<node>.log     agent logs (JSON lines)

NB: the seed's ``/data1`` becomes ``<dir>/data1``: a mount point must be a directory, and making
``/data1`` would write to the host's root file system, which the nodes share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import tomli_w

from kagemusha.testing.netns import Harness, LoopDisk

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"
KAGEMUSHA = str(Path(sys.executable).parent / "kagemusha")
ADMIN_PORT = 6202
APP_PORTS = {"domain1": 80, "domain2": 8081}  # the seed's domain.http.port (own netns: no clash)


def seed_script(src: Path, dest: Path, *, roots: dict[str, str], domain: str | None = None) -> Path:
    """A seed script verbatim but for ``otxadmin`` -> ``kagemusha domain`` and the ``/dataN`` roots."""
    text = src.read_text().replace("/opt/WebOTX/bin/otxadmin", f"{KAGEMUSHA} domain")
    if domain is not None:  # the seed: webotx2's scripts are webotx1's with /data2 and domain2
        text = text.replace("domain1", domain).replace("/data1", "/data" + domain.removeprefix("domain"))
    for old, new in roots.items():
        text = text.replace(old, new)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    dest.chmod(0o755)
    return dest


@dataclass
class NsCluster:
    h: Harness
    dir: Path
    groups: list[dict[str, Any]] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        for n in self.h.nodes:
            (self.dir / n / "registry").mkdir(parents=True, exist_ok=True)
        pw = self.dir / "admin.pw"
        pw.write_text("adminadmin\n")
        pw.chmod(0o600)

    # -- set-up -------------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        return list(self.h.nodes)

    def mount_point(self, i: int) -> Path:
        return self.dir / f"data{i + 1}"

    def node_env(self, node: str) -> dict[str, str]:
        return {"KAGEMUSHA_DOMAIN_REGISTRY": str(self.dir / node / "registry"), "KAGEMUSHA_NODE": node}

    def domain_cli(self, node: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.h.run(node, [KAGEMUSHA, "domain", *args], env=self.node_env(node), timeout=timeout)

    def create_domain(self, disk: LoopDisk, mp: Path, name: str, *, on: str, others: list[str]) -> None:
        """``create-domain`` on ``on`` onto the disk (mounted there for it); ``domain setup`` on the others."""
        props = self.dir / f"{name}.properties"
        props.write_text((SEED / f"{name}.properties").read_text(encoding="latin-1") + "domain.app=kagemusha.demo_app:app\n",
                         encoding="latin-1")
        mp.mkdir(exist_ok=True)
        for node in [on, *others]:
            self.h.run(node, ["mount", disk.device, str(mp)])
            try:
                if node == on:
                    self.domain_cli(node, "create-domain", "--user", "admin", "--password", "adminadmin", "--port",
                                    str(ADMIN_PORT), f"--file={props}", f"--domaindir={mp}/domains", name)
                else:
                    self.domain_cli(node, "setup", "--domains-root", f"{mp}/domains", "--port", str(ADMIN_PORT))
            finally:
                self.h.run(node, ["umount", str(mp)])

    def webotx_group(self, name: str, nodes: list[str], *, disk: LoopDisk, mp: Path, vip: str, domain: str,
                     scripts: str, monitor: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """The seed's failover group: fip, sd (disk), exec (seed scripts), and the domain monitor."""
        gdir = self.dir / name
        roots = {"/data1": str(self.mount_point(0)), "/data2": str(self.mount_point(1))}
        for s in ("start.sh", "stop.sh"):
            seed_script(SEED / scripts / s, gdir / s, roots=roots, domain=domain if domain != "domain1" else None)
        n = name[-1]
        mon = {"name": f"otxw{n}", "type": "domain", "domain": domain, "domaindir": f"{mp}/domains",
               "password_file": str(self.dir / "admin.pw"), "request_timeout": 1.0,
               "interval": 0.5, "timeout": 3.0, "retries": 2, "restart_limit": 1, "failover_limit": 1,
               "final_action": "stop_group", **(monitor or {})}
        return {
            "name": name,
            "nodes": nodes,
            "resources": [
                {"name": f"fip{n}", "type": "floating_ip", "address": vip, "interface": "eth0"},
                {"name": f"sd{n}", "type": "disk", "device": disk.device, "mount_point": str(mp), "fsck": "never",
                 "kill_grace": 0.5},
                {"name": f"exec{n}", "type": "exec", "start": str(gdir / "start.sh"), "stop": str(gdir / "stop.sh"),
                 "start_timeout": 60, "stop_timeout": 60},
            ],
            "monitors": [mon],
            **extra,
        }

    def write_config(self) -> Path:
        data = {
            "cluster": {"name": "e2e", "store": f"local:{self.dir / 'store.db'}", "state_dir": str(self.dir / "state"),
                        "startup_wait": 1.0, **self.cluster},
            "nodes": [{"name": n, "address": f"{self.h.address(n).ip}:7700", "env": self.node_env(n)} for n in self.nodes],
            "groups": self.groups,
        }
        path = self.dir / "cluster.toml"
        path.write_text(tomli_w.dumps(data))
        r = subprocess.run([sys.executable, "-m", "kagemusha", "config", "validate", str(path)],
                           check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"config invalid:\n{r.stdout}{r.stderr}"
        return path

    # -- agents ---------------------------------------------------------------------------

    def start(self, node: str) -> None:
        log = open(self.dir / "logs" / f"{node}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.procs[node] = self.h.popen(
                node,
                [sys.executable, "-m", "kagemusha", "agent", "--config", str(self.dir / "cluster.toml"), "--node", node],
                env={**self.node_env(node), "KAGEMUSHA_LOG_FORMAT": "json"},
                stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def crash(self, node: str) -> float:
        """Power cut of ``node`` (harness: link down, every process killed, mounts and VIPs gone)."""
        self.h.crash(node)
        t = time.time()
        p = self.procs.pop(node, None)
        if p is not None:
            p.wait(5)
        return t

    def revive(self, node: str) -> None:
        self.h.revive(node)
        self.start(node)

    def stop_all(self) -> None:
        """Agents leave gracefully (SIGTERM, bounded), then anything left is killed by pid."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.procs.clear()

    def log(self, node: str) -> str:
        try:
            return (self.dir / "logs" / f"{node}.log").read_text(errors="replace")
        except OSError:
            return ""

    def logs_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {n}.log\n{self.log(n)[-chars:]}" for n in self.nodes)

    # -- observing -------------------------------------------------------------------------

    def status(self, node: str | None = None) -> dict[str, Any]:
        """``kagemusha status --json``, run inside a live node's namespace (a client of the store)."""
        where = node or next((n for n, p in self.procs.items() if p.poll() is None), self.nodes[0])
        r = self.h.run(where, [sys.executable, "-m", "kagemusha", "status", "--config", str(self.dir / "cluster.toml"),
                               "--json"], timeout=30)
        data: dict[str, Any] = json.loads(r.stdout)
        return data

    def group(self, name: str, node: str | None = None) -> dict[str, Any]:
        return next(g for g in self.status(node)["groups"] if g["name"] == name)

    def wait_group(self, name: str, state: str, node: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        g: dict[str, Any] = {}
        while time.monotonic() < deadline:
            g = self.group(name)
            if g["state"] == state and (node is None or g["node"] == node):
                return g
            time.sleep(0.1)
        raise AssertionError(f"group {name} not {state} on {node} after {timeout}s: {g}\n{self.logs_tail()}")

    def get(self, vip: str, port: int, path: str = "/", timeout: float = 2.0) -> str:
        """GET from the client namespace; the body, or ``(error ...)``."""
        code = (
            "import sys, urllib.request\n"
            "try:\n"
            "    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode().strip())\n"
            "except Exception as e:\n"
            "    print(f'(error {type(e).__name__}: {e})')\n"
        )
        r = self.h.python("client", code, f"http://{vip}:{port}{path}", str(timeout), timeout=timeout + 10)
        return r.stdout.strip()


class Sampler:
    """Samples who holds the VIPs and the disks, as fast as it can (one ``ip`` call per node per sample)."""

    def __init__(self, h: Harness, vips: list[Any], disks: list[LoopDisk], period: float = 0.01) -> None:
        self.h, self.vips, self.disks, self.period = h, vips, disks, period
        self.samples: list[tuple[float, list[list[str]], list[list[str]]]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                v = [self.h.vip_holders(x) for x in self.vips]
                d = [self.h.disk_holders(x) for x in self.disks]
                self.samples.append((time.time(), v, d))
            except Exception as exc:  # noqa: BLE001 - a sample during teardown; reported, not raised
                self.errors.append(str(exc))
            self._stop.wait(self.period)

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(10)

    def assert_exclusive(self) -> None:
        assert self.samples, f"no samples taken: {self.errors[:3]}"
        for at, vips, disks in self.samples:
            for i, holders in enumerate(vips):
                assert len(holders) <= 1, f"at {at:.3f} VIP {self.vips[i]} held by {holders}"
            for i, holders in enumerate(disks):
                assert len(holders) <= 1, f"at {at:.3f} disk {self.disks[i].device} mounted on {holders}"


CLIENT = r'''
import http.client, json, sys, time, os
vip, port, out, stop, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
period = 0.01
f = open(out, "a", buffering=1)
i = 0
t_end = time.monotonic() + limit
while time.monotonic() < t_end and not os.path.exists(stop):
    t0 = time.monotonic()
    put = i % 2 == 0
    key = f"k{i}"
    rec = {"t": time.time(), "op": "put" if put else "get", "key": key}
    try:
        c = http.client.HTTPConnection(vip, port, timeout=0.5)
        if put:
            c.request("PUT", f"/kv/{key}", body=f"v{i}", headers={"Connection": "close"})
        else:
            c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read().decode(errors="replace").strip()
        rec.update(ok=r.status == 200, status=r.status, body=body)
        c.close()
    except Exception as e:
        rec.update(ok=False, err=type(e).__name__)
    rec["done"] = time.time()
    f.write(json.dumps(rec) + "\n")
    i += 1
    time.sleep(max(0.0, period - (time.monotonic() - t0)))
'''


class Client:
    """A client in the harness's client namespace: PUT /kv/k<i> and GET / to the VIP, one every 10 ms."""

    def __init__(self, h: Harness, dir: Path, vip: str, port: int, limit: float = 120.0) -> None:
        self.out = dir / f"client-{vip}-{port}.jsonl"
        self.stopfile = dir / f"client-{vip}-{port}.stop"
        self.proc = h.popen("client", [sys.executable, "-c", CLIENT, vip, str(port), str(self.out), str(self.stopfile),
                                       str(limit)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> list[dict[str, Any]]:
        self.stopfile.touch()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return self.records()

    def records(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(x) for x in self.out.read_text().splitlines() if x.strip()]
        except OSError:
            return []


def outage(records: list[dict[str, Any]], after: float) -> float:
    """Client-visible outage: from the last success before ``after`` to the first request sent after it that succeeded."""
    before = [r["done"] for r in records if r["ok"] and r["done"] <= after]
    later = [r["done"] for r in records if r["ok"] and r["t"] > after]
    if not before or not later:
        return float("inf")
    return min(later) - max(before)
