"""``kagemusha init`` / ``build`` / ``uninstall`` end to end, as a new operator would use them.

Bare node namespaces (a loop-device disk with a file system, no kagemusha state) become the
seed's one-way and two-way clusters with three commands per node, and go back to what they were.

Each node's ``/var/lib/kagemusha`` and ``/etc/kagemusha`` are per-node directories of the test
(``KAGEMUSHA_HOME``, ``KAGEMUSHA_ETC``): the node namespaces share the host's file system, and a
test never writes the host's real ones. ``--service none``: the nodes have no systemd, so build
starts the agent itself and records its pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kagemusha.testing import netns

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(420)]

PY = sys.executable


@dataclass
class Site:
    h: netns.Harness
    dir: Path

    def env(self, node: str) -> dict[str, str]:
        return {"KAGEMUSHA_HOME": str(self.dir / node / "var-lib-kagemusha"),
                "KAGEMUSHA_ETC": str(self.dir / node / "etc-kagemusha"), "KAGEMUSHA_NODE": node,
                "KAGEMUSHA_DOMAIN_REGISTRY": ""}

    def kg(self, node: str, *args: str, env: dict[str, str] | None = None,
           timeout: float = 240) -> subprocess.CompletedProcess[str]:
        t = time.monotonic()
        r = self.h.run(node, [PY, "-m", "kagemusha", *args], env={**self.env(node), **(env or {})},
                       check=False, timeout=timeout)
        print(f"{time.monotonic() - t:6.2f}s {node}: kagemusha {' '.join(args[:1])} {' '.join(args[5:])}")
        return r

    def init(self, topology: str, *, plan: str = "plan", **flags: str) -> subprocess.CompletedProcess[str]:
        groups = 1 if topology == "one-way" else 2
        h = self.h
        args = {
            "--out": str(self.dir / plan),
            "--nodes": ",".join(f"{n}={h.address(n).ip}" for n in h.nodes),
            "--vip": ",".join(str(v) for v in h.vips(groups)),
            "--interface": "eth0",
            "--disk": ",".join(d.device for d in h.disks[:groups]),
            "--mount": ",".join(str(self.dir / f"data{i + 1}") for i in range(groups)),
            "--store": f"local:{self.dir / 'store.db'}",
            "--admin-password-file": str(self.dir / "admin.pw"),
            "--state-dir": str(self.dir / "state"),
            "--fsck": "never",
            **flags,
        }
        return self.kg("n1", "init", topology, *[x for kv in args.items() for x in kv])

    def build(self, node: str, *extra: str, plan: str = "plan", env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
        return self.kg(node, "build", "--plan", str(self.dir / plan), "--node", node, "--service", "none", *extra,
                       env=env)

    def uninstall(self, node: str, *extra: str, plan: str = "plan") -> subprocess.CompletedProcess[str]:
        r = self.kg(node, "uninstall", "--plan", str(self.dir / plan), "--node", node, *extra)
        print(r.stdout, r.stderr, sep="\n")  # shown when the test fails: each step's outcome
        if "did not leave" in r.stderr:
            # NB: not a failure (the escalation is the designed path), but seen once in CI: keep the log
            warnings.warn(f"uninstall on {node} escalated:\n{r.stderr}", stacklevel=2)
        return r

    def status(self, node: str, plan: str = "plan") -> dict[str, Any]:
        r = self.kg(node, "status", "--config", str(self.dir / plan / "cluster.toml"), "--json", timeout=30)
        assert r.returncode == 0, r.stderr
        data: dict[str, Any] = json.loads(r.stdout)
        return data

    def wait_group(self, group: str, node: str, ask: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        g: dict[str, Any] = {}
        while time.monotonic() < deadline:
            g = next(x for x in self.status(ask)["groups"] if x["name"] == group)
            if g["state"] == "online" and g["node"] == node:
                return
            time.sleep(0.2)
        raise AssertionError(f"{group} not online on {node}: {g}")

    def config_files(self, node: str) -> dict[str, str]:
        """The installed config and the build manifest (what build writes; logs and state excluded)."""
        files = {}
        for top in (self.dir / node / "etc-kagemusha", self.dir / node / "var-lib-kagemusha" / "procedure"):
            for p in sorted(top.rglob("*")):
                if p.is_file() and not p.name.endswith(".log"):
                    files[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        return files

    def snapshot(self, node: str, cluster: str) -> dict[str, Any]:
        """What a node has: its kagemusha files, the cluster's state dir, mounts and addresses."""
        files: dict[str, str] = {}
        for top in (self.dir / node, self.dir / "state" / cluster / node):
            if not top.exists():
                continue
            for p in sorted(top.rglob("*")):
                rel = str(p.relative_to(self.dir))
                files[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        return {
            "files": files,
            "mounts": sorted(e.mount_point for e in self.h.mounts(node)),
            "addresses": sorted(str(a) for a in self.h.addresses(node)),
            "processes": len(self.h.pids(node)),
        }


@pytest.fixture
def site(request: pytest.FixtureRequest) -> Iterator[Any]:
    netns.require()
    made: list[netns.Harness] = []
    work = Path(tempfile.mkdtemp(prefix="kg-proc-"))

    def make(disks: int = 1) -> Site:
        h = netns.Harness(["n1", "n2"], disks=disks, disk_size_mb=32)
        h.start()
        made.append(h)
        s = Site(h, work / f"s{len(made)}")
        s.dir.mkdir(parents=True)
        for n in h.nodes:
            (s.dir / n).mkdir()
        pw = s.dir / "admin.pw"
        pw.write_text("adminadmin\n")
        pw.chmod(0o600)
        return s

    try:
        yield make
    finally:
        for h in made:
            h.close()
        if os.environ.get("KG_E2E_KEEP"):
            print(f"procedure e2e: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _steps(r: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def _ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_one_way_from_bare_nodes_and_back(site: Any) -> None:
    s: Site = site()
    h = s.h
    before = {n: s.snapshot(n, "webotx-oneway") for n in h.nodes}
    _ok(s.init("one-way"))

    # n2 before n1: one clear line, nothing changed.
    r = s.build("n2")
    assert r.returncode == 1 and "run build on n1 first" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert s.snapshot("n2", "webotx-oneway") == before["n2"]

    # The dry run lists the steps and changes nothing.
    r = s.build("n1", "--dry-run", "--json")
    _ok(r)
    dry = _steps(r)
    assert {d["step"]: d["status"] for d in dry} == {
        "config-files": "would do", "mount-points": "would do", "file-systems": "already done",  # ext4 there
        "domain-domain1": "would do", "store-config": "would do", "service": "already done",  # --service none
        "start": "would do"}, dry
    assert s.snapshot("n1", "webotx-oneway") == before["n1"]

    # n1, killed after each step in turn (after the step's work, before the manifest says so),
    # then run again: it resumes and completes.
    for k in range(1, len(dry) + 1):
        r = s.build("n1", "--json", env={"KAGEMUSHA_BUILD_CRASH_AFTER": str(k)})
        assert r.returncode == 75, f"step {k}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        done = _steps(r)
        # the steps before the one killed last are done; that one is found done or finished now
        assert all(d["status"] == "already done" for d in done[: k - 2]), (k, done)
        assert len(done) in (k - 1, k) and all(d["status"] in ("already done", "done") for d in done), (k, done)
    r = s.build("n1", "--json")
    final = _steps(_ok(r))
    # every step was done by a killed run; this one finds each done (the agent of the last one runs)
    assert [d["status"] for d in final] == ["already done"] * 7, final

    # A second build changes nothing (the installed files and the manifest stay byte for byte).
    snap = s.config_files("n1")
    again = _steps(_ok(s.build("n1", "--json")))
    assert [d["status"] for d in again] == ["already done"] * 7, again
    assert s.config_files("n1") == snap

    _ok(s.build("n2"))
    s.wait_group("webotx1", "n1", "n2")
    # The human view: one line per step.
    text = _ok(s.build("n2")).stdout
    assert text.count("already done") == 6 and len(text.strip().splitlines()) == 6, text  # no mkfs step on n2

    # The seed's checks: online at home, moved to n2 and back, the domain answering through the VIP.
    r = s.build("n2", "--verify", "--json")
    checks = [d for d in _steps(r) if d["status"] in ("ok", "failed")]
    assert r.returncode == 0 and checks and all(d["status"] == "ok" for d in checks), r.stdout + r.stderr
    assert any("served by n2" in d["detail"] for d in checks), checks

    # A crash of the active node fails over; build brings the node back.
    h.crash("n1")
    s.wait_group("webotx1", "n2", "n2")
    h.revive("n1")
    back = _steps(_ok(s.build("n1", "--json")))
    assert [d["status"] for d in back if d["step"] == "start"] == ["done"], back

    # Uninstall n1 (moves nothing: the group runs on n2), then n2 (the last node).
    _ok(s.uninstall("n1"))
    assert s.snapshot("n1", "webotx-oneway") == before["n1"]
    out = _ok(s.uninstall("n2")).stdout
    assert "last node" in out
    for n in h.nodes:
        assert s.snapshot(n, "webotx-oneway") == before[n], n
    assert not (s.dir / "store.db").exists()
    # The domain is gone from the switchover disk.
    look = s.dir / "look"
    look.mkdir()
    h.run("n1", ["mount", h.disk.device, str(look)])
    try:
        assert not (look / "domains").exists()
    finally:
        h.run("n1", ["umount", str(look)])


def test_two_way_from_bare_nodes_and_back(site: Any) -> None:
    s: Site = site(disks=2)
    h = s.h
    before = {n: s.snapshot(n, "webotx-twoway") for n in h.nodes}
    _ok(s.init("two-way"))
    # n1 killed inside the domain2 step (its disk mounted, domain2 created, nothing recorded):
    # run again, it takes the domain it finds, unmounts the disk and goes on.
    r = s.build("n1", "--json", env={"KAGEMUSHA_BUILD_CRASH_IN_DOMAIN": "domain2"})
    assert r.returncode == 75, r.stdout + r.stderr
    assert [e.mount_point for e in h.mounts("n1")] == [str(s.dir / "data2")]
    r = _ok(s.build("n1", "--json"))
    resumed = {d["step"]: d for d in _steps(r)}
    assert resumed["domain-domain1"]["status"] == "already done", resumed
    assert "found in" in resumed["domain-domain2"]["detail"], resumed
    _ok(s.build("n2"))
    r = s.build("n1", "--verify", "--json")
    checks = [d for d in _steps(r) if d["status"] in ("ok", "failed")]
    assert r.returncode == 0 and len(checks) == 12 and all(d["status"] == "ok" for d in checks), r.stdout + r.stderr
    s.wait_group("webotx1", "n1", "n1")
    s.wait_group("webotx2", "n2", "n1")
    # The dry run says what uninstall would do and changes nothing.
    snap = s.config_files("n2")
    dry = _steps(_ok(s.uninstall("n2", "--dry-run", "--json")))
    assert dry and all(d["status"] == "would do" for d in dry), dry
    assert not any(d["step"] == "domains" for d in dry), dry  # n1 is still built: n2 is not the last
    assert s.config_files("n2") == snap
    # n2's uninstall moves webotx2 to n1 first; n1's (the last) stops both.
    out = _ok(s.uninstall("n2")).stdout
    assert "moved webotx2 to n1" in out, out
    s.wait_group("webotx2", "n1", "n1")
    _ok(s.uninstall("n1"))
    for n in h.nodes:
        assert s.snapshot(n, "webotx-twoway") == before[n], n
    again = _ok(s.uninstall("n1")).stdout  # nothing left to undo
    assert "no manifest" in again, again


def test_bad_flags_and_failed_preflight_change_nothing(site: Any) -> None:
    s: Site = site()
    h = s.h
    before = s.snapshot("n1", "webotx-oneway")
    r = s.init("two-way")  # one disk and one VIP for two groups
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines and all(line.startswith("kagemusha: --") for line in lines), lines
    assert not (s.dir / "plan").exists()

    _ok(s.init("one-way", **{"--interface": "eth9"}))
    r = s.build("n1", "--node", "n9")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # Preflight: no such interface, and the VIP is taken by another host (the client namespace).
    h.run("client", ["ip", "addr", "add", str(h.vip), "dev", "eth0"])
    r = s.build("n1")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert any("interface eth9 is not present" in x for x in lines), lines
    assert len(lines) == len(set(lines)) and all(x.startswith("kagemusha: ") for x in lines), lines
    assert s.snapshot("n1", "webotx-oneway") == before

    shutil.rmtree(s.dir / "plan")
    _ok(s.init("one-way"))
    r = s.build("n1")
    assert r.returncode == 1
    assert [x for x in r.stderr.splitlines() if "answers ARP" in x], r.stderr
    assert s.snapshot("n1", "webotx-oneway") == before
    h.run("client", ["ip", "addr", "del", str(h.vip), "dev", "eth0"])
