"""The admin domain: autostart of user domains, --adminonly, stopping admin stops what it started."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import APPS, Node, alive, tagged_under

pytestmark = pytest.mark.timeout(240)  # includes waiting for PORTS_LOCK and CLI runs on a loaded machine

ADMIN = "http://127.0.0.1:16202"


def _states(node: Node) -> dict[str, str]:
    lines = node.run("list").stdout.splitlines()[1:]
    return {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines}


def test_admin_starts_autostart_domains_and_stops_them_first(node: Node, workdir: Path) -> None:
    root1, root2 = workdir / "data1" / "domains", workdir / "data2" / "domains"
    node.create("domain1", root1)
    node.create("domain2", root2)
    node.run("autostart", "--disable", "domain2", check=True)

    r = node.run("start-domain", "admin")
    assert r.returncode == 0, r.stderr
    assert _states(node) == {"admin": "running", "domain1": "running", "domain2": "not running"}
    assert httpx.get("http://127.0.0.1:10080/").status_code == 200
    assert httpx.get(f"{ADMIN}/status").status_code == 401
    st = httpx.get(f"{ADMIN}/status", auth=("admin", "adminadmin")).json()
    assert {d["name"]: d["state"] for d in st["domains"]} == {"domain1": "running", "domain2": "not running"}

    # domain2 started by hand is not the admin domain's to stop
    node.run("start", "domain2", check=True)
    pids1 = [p.pid for p in tagged_under(root1)]
    admin_pids = [p.pid for p in tagged_under(node.registry / "admin")]
    assert pids1 and admin_pids

    r = node.run("stop-domain", "admin")
    assert r.returncode == 0, r.stderr
    assert not [p for p in pids1 + admin_pids if alive(p)]
    assert _states(node) == {"admin": "not running", "domain1": "not running", "domain2": "running"}
    node.run("stop", "domain2", check=True)


def test_adminonly_and_autostart_enable(node: Node, workdir: Path) -> None:
    root1 = workdir / "data1" / "domains"
    node.create("domain1", root1)
    assert node.run("start", "--adminonly", "admin").returncode == 0
    assert _states(node) == {"admin": "running", "domain1": "not running"}
    assert node.run("stop", "admin").returncode == 0

    node.run("autostart", "--disable", "domain1", check=True)
    assert node.run("start", "admin").returncode == 0
    assert _states(node)["domain1"] == "not running"
    assert node.run("stop", "admin").returncode == 0
    node.run("autostart", "--enable", "domain1", check=True)
    assert node.run("start", "admin").returncode == 0
    assert _states(node)["domain1"] == "running"
    assert node.run("stop", "--force", "--wait_timeout", "30", "admin").returncode == 0
    assert not tagged_under(workdir)


def test_stopping_admin_passes_the_flags_to_user_domains(node: Node, workdir: Path) -> None:
    root1 = workdir / "data1" / "domains"
    node.create("domain1", root1)
    node.run("deploy", "domain1", "stubborn_app:app", "--path", str(APPS / "stubborn"), check=True)
    assert node.run("start", "admin").returncode == 0
    grandchild = httpx.get("http://127.0.0.1:10080/").json()["grandchild"]

    r = node.run("stop", "--wait_timeout", "1", "admin")  # no --force: domain1 ignores SIGTERM
    assert r.returncode == 1 and "domain1" in r.stderr and "admin domain keeps running" in r.stderr
    assert _states(node) == {"admin": "running", "domain1": "running"}

    r = node.run("stop", "--force", "--wait_timeout", "1", "admin")
    assert r.returncode == 0, r.stderr
    assert not alive(grandchild)
    assert not tagged_under(workdir)


def test_admin_reports_a_domain_it_could_not_start(node: Node, workdir: Path) -> None:
    node.create("domain1", workdir / "data1" / "domains")
    node.run("deploy", "domain1", "no_such_module:app", check=True)
    r = node.run("start", "admin")
    assert r.returncode == 1
    assert (
        "autostart failed" in r.stderr and "domain1" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    )
    assert _states(node) == {"admin": "running", "domain1": "not running"}
    assert node.run("stop", "admin").returncode == 0
    assert not tagged_under(workdir)
