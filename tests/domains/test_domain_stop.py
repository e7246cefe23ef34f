"""Stop semantics: graceful, --force after --wait_timeout, timeout without --force, fencing.

The app ignores SIGTERM and has spawned a detached grandchild (double fork, own session) that
ignores SIGTERM too: only the domain's tag can find it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import psutil
import pytest

from kagemusha.domains import (
    DomainState,
    NodeRegistry,
    domain_state,
    kill_domain,
    kill_domains_under,
    start_domain,
)

from .conftest import APPS, Node, alive, tagged_under

pytestmark = pytest.mark.timeout(240)  # includes waiting for PORTS_LOCK and CLI runs on a loaded machine


def _start_stubborn(node: Node, root: Path) -> tuple[list[int], int, int]:
    node.create("domain1", root)
    node.run("deploy", "domain1", "stubborn_app:app", "--path", str(APPS / "stubborn"), check=True)
    node.run("start", "domain1", check=True)
    info = httpx.get("http://127.0.0.1:10080/").json()
    grandchild = int(info["grandchild"])
    assert alive(grandchild)
    gc = psutil.Process(grandchild)
    assert os.getsid(grandchild) != os.getsid(info["pid"])  # detached: a session of its own
    assert gc.ppid() != info["pid"]  # and reparented
    pids = [p.pid for p in tagged_under(root / "domain1")]
    assert grandchild in pids and info["pid"] in pids and len(pids) >= 3
    return pids, int(info["pid"]), grandchild


def test_stop_without_force_times_out_and_keeps_running(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    pids, app_pid, _grandchild = _start_stubborn(node, root)
    t0 = time.monotonic()
    r = node.run("stop-domain", "--wait_timeout", "1", "domain1")
    elapsed = time.monotonic() - t0
    assert r.returncode == 1
    assert "did not stop within 1 s" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert elapsed < 10
    assert all(alive(p) for p in pids)
    assert httpx.get("http://127.0.0.1:10080/").json()["pid"] == app_pid  # still serving
    reg = NodeRegistry(node.registry)
    assert domain_state("domain1", registry=reg) is DomainState.RUNNING
    assert "domain1 running" in node.run("list").stdout


def test_force_stop_kills_everything_after_wait_timeout(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    pids, _, grandchild = _start_stubborn(node, root)
    t0 = time.monotonic()
    r = node.run("stop-domain", "--force", "--wait_timeout", "2", "domain1")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert 2.0 <= elapsed < 8.0
    left = [p for p in pids if alive(p)]
    assert not left, f"left behind: {left}"
    assert not alive(grandchild)
    assert not tagged_under(workdir)
    assert node.run("list").stdout.splitlines()[1:] == ["admin not running", "domain1 not running"]
    # and it starts again cleanly
    assert node.run("start", "domain1").returncode == 0
    assert node.run("stop", "--force", "--wait_timeout", "0", "domain1").returncode == 0
    assert not tagged_under(workdir)


def test_force_with_zero_wait_and_fencing_kill_at_once(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    pids, _, _ = _start_stubborn(node, root)
    t0 = time.monotonic()
    assert node.run("stop", "--force", "--wait_timeout", "0", "domain1").returncode == 0
    assert time.monotonic() - t0 < 5.0
    assert not [p for p in pids if alive(p)]

    reg = NodeRegistry(node.registry)
    start_domain("domain1", registry=reg)
    pids = [p.pid for p in tagged_under(root / "domain1")]
    killed = kill_domain("domain1", registry=reg)
    assert set(pids) <= set(killed)
    assert not [p for p in pids if alive(p)]
    assert domain_state("domain1", registry=reg) is DomainState.NOT_RUNNING


def test_leftovers_of_a_crashed_master_are_found(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    pids, app_pid, grandchild = _start_stubborn(node, root)
    master = next(p for p in pids if p not in (app_pid, grandchild))
    psutil.Process(master).kill()  # the master crashes; the app and the grandchild are orphans
    reg = NodeRegistry(node.registry)
    assert _wait(lambda: not alive(master))
    assert domain_state("domain1", registry=reg) is DomainState.STOPPING  # never "not running" with leftovers
    r = node.run("start", "domain1")
    assert r.returncode == 1 and "--force" in r.stderr
    assert node.run("stop", "--force", "--wait_timeout", "1", "domain1").returncode == 0
    assert not [p for p in pids if alive(p)]


def _wait(pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_fencing_works_with_the_domain_directory_gone(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    pids, _, grandchild = _start_stubborn(node, root)
    moved = workdir / "unmounted"
    (root / "domain1").rename(moved)  # as if the switchover disk had been pulled
    reg = NodeRegistry(node.registry)
    try:
        assert domain_state("domain1", registry=reg) is DomainState.STOPPING
        killed = kill_domain("domain1", registry=reg)
        assert set(pids) <= set(killed)
        assert not [p for p in pids if alive(p)] and not alive(grandchild)
        assert domain_state("domain1", registry=reg) is DomainState.NOT_RUNNING
        assert not (root / "domain1").exists()  # nothing recreated on the "mount point"
    finally:
        moved.rename(root / "domain1")
    # the same through `stop --force` (the seed's stop.sh after the disk went away)
    node.run("start", "domain1", check=True)
    pids = [p.pid for p in tagged_under(root / "domain1")]
    (root / "domain1").rename(moved)
    try:
        r = node.run("stop-domain", "--force", "--wait_timeout", "1", "domain1")
        assert r.returncode == 0, r.stderr
        assert not [p for p in pids if alive(p)]
        assert not (root / "domain1").exists()
    finally:
        moved.rename(root / "domain1")


def test_kill_domains_under_a_disk_kills_only_that_disks_domains(node: Node, workdir: Path) -> None:
    data1, data2 = workdir / "data1" / "domains", workdir / "data2" / "domains"
    node.create("domain1", data1)
    node.create("domain2", data2)
    node.run("start", "domain1", check=True)
    node.run("start", "domain2", check=True)
    pids1 = [p.pid for p in tagged_under(data1)]
    pids2 = [p.pid for p in tagged_under(data2)]
    killed = kill_domains_under(workdir / "data1")
    assert set(pids1) <= set(killed) and not set(pids2) & set(killed)
    assert not [p for p in pids1 if alive(p)] and all(alive(p) for p in pids2)
    assert node.run("stop", "domain2").returncode == 0


def test_app_server_crash_ends_the_domain_without_leftovers(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    pids, app_pid, grandchild = _start_stubborn(node, root)
    psutil.Process(app_pid).kill()
    reg = NodeRegistry(node.registry)
    assert _wait(lambda: domain_state("domain1", registry=reg) is DomainState.NOT_RUNNING, timeout=15)
    # The master cleaned up, then exited; it may still be finishing its exit when the state says so.
    assert _wait(lambda: not [p for p in pids if alive(p)] and not alive(grandchild), timeout=5)
    state = (root / "domain1" / "state" / "state.json").read_text()
    assert "exited unexpectedly" in state
