"""Supervised domains: the admin domain restarts a crashed domain, within its limit, then gives up."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from .conftest import Node, alive, tagged_under, wait_for

pytestmark = pytest.mark.timeout(240)


def _record(root: Path) -> dict[str, object]:
    try:
        return dict(json.loads((root / "domain1" / "state" / "state.json").read_text()))
    except (OSError, ValueError):
        return {}


def _serving_again(root: Path, old_pid: int) -> bool:
    rec = _record(root)
    if rec.get("state") != "running" or rec.get("pid") == old_pid:
        return False
    try:
        return httpx.get("http://127.0.0.1:10080/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _state_of(node: Node, name: str) -> str:
    for line in node.run("list").stdout.splitlines()[1:]:
        n, _, st = line.partition(" ")
        if n == name:
            return st
    return ""


def test_crashed_domain_restarted_up_to_the_limit_then_failed(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root, domain_restart_limit="2", domain_restart_backoff="0.2")
    node.run("start", "admin", check=True)  # autostart: the admin domain starts domain1
    admin_log = node.registry / "admin" / "logs" / "admin.log"

    for n in (1, 2):
        pid = int(str(_record(root)["pid"]))
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda pid=pid: _serving_again(root, pid), timeout=90), admin_log.read_text()[-2000:]
        text = admin_log.read_text()
        assert f"master (pid {pid}) died: killed by SIGKILL" in text
        assert f"restarted (restart {n} of 2)" in text

    pid = int(str(_record(root)["pid"]))
    app_pid = int(str(_record(root)["app_pid"]))
    os.kill(pid, signal.SIGKILL)  # past the limit
    assert wait_for(lambda: _record(root).get("state") == "failed", timeout=60), admin_log.read_text()[-2000:]
    assert "restart limit reached (2 in 600 s)" in str(_record(root)["detail"])
    assert "killed by SIGKILL" in str(_record(root)["detail"])
    assert not alive(app_pid) and not tagged_under(root / "domain1")  # the orphaned app server too
    assert _state_of(node, "domain1") == "failed"
    h = node.run("health", "domain1", "--password", "adminadmin")
    assert h.returncode == 1 and "failed" in h.stderr  # the cluster's monitor fails: failover
    assert "restart limit reached" in admin_log.read_text()

    # an operator's start brings it back with a full restart budget
    node.run("start", "domain1", check=True)
    assert _state_of(node, "domain1") == "running"
    assert not (root / "domain1" / "state" / "restarts.json").exists()
    # a stopped domain is not restarted: stop records that before it signals anything
    node.run("stop", "domain1", check=True)
    assert (root / "domain1" / "state" / "desired").read_text().strip() == "stopped"
    assert _state_of(node, "domain1") == "not running"
    node.run("stop", "admin", check=True)
    assert not tagged_under(workdir)


def test_failovers_do_not_use_up_the_restart_budget(node: Node, workdir: Path) -> None:
    """Regression: after a failover the admin domain's first look found the previous owner's dead
    master on the switchover disk and took it for a crash ("died ... restart 1 of 2") while its
    autostart started the domain; the queued restart then stayed pending, so the next real crash
    was restarted at once, past the back-off and the limit, without the line that says it died."""
    root = workdir / "data1" / "domains"
    node.create("domain1", root, domain_restart_limit="2", domain_restart_backoff="0")
    admin_log = node.registry / "admin" / "logs" / "admin.log"
    for _ in range(3):  # a failover back onto this node: admin and domain gone, the records left
        node.run("start", "admin", check=True)  # autostart: the admin domain starts domain1
        rec = _record(root)
        admin_pid = int(json.loads((node.registry / "admin" / "state" / "state.json").read_text())["pid"])
        for pid in (admin_pid, int(str(rec["pid"])), int(str(rec["app_pid"]))):
            os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not tagged_under(root / "domain1"), timeout=30)
    node.run("start", "admin", check=True)
    pid = int(str(_record(root)["pid"]))
    os.kill(pid, signal.SIGKILL)  # a real crash: within the budget
    assert wait_for(lambda: _serving_again(root, pid), timeout=90), admin_log.read_text()[-2000:]
    text = admin_log.read_text()
    assert f"master (pid {pid}) died: killed by SIGKILL" in text and "restarted (restart 1 of 2)" in text, text
    assert text.count(" died") == 1, text  # the failovers' stale records are no crash
    node.run("stop", "admin", check=True)
    assert not tagged_under(workdir)


def test_killed_domain_is_not_restarted(node: Node, workdir: Path) -> None:
    """Fencing (``kill``) records the domain stopped first: the admin domain must not undo it."""
    root = workdir / "data1" / "domains"
    node.create("domain1", root, domain_restart_backoff="0")
    node.run("start", "admin", check=True)
    node.run("kill", "domain1", check=True)
    assert (root / "domain1" / "state" / "desired").read_text().strip() == "stopped"
    # the supervisor looks every 0.2 s; its log shows each look that finds something to do
    admin_log = node.registry / "admin" / "logs" / "admin.log"
    node.run("start", "domain1", check=True)  # a fresh start, desired running again
    pid = int(str(_record(root)["pid"]))
    node.run("kill", "domain1", check=True)
    assert not alive(pid)
    assert "died" not in admin_log.read_text()
    node.run("stop", "admin", check=True)
    assert _state_of(node, "domain1") == "not running"
