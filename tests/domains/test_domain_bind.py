"""Services bound to the VIP (the seed's 2.x.3) and ``domain set`` (otxadmin set).

A loopback alias (127.0.0.2, routed to ``lo`` on Linux without any configuration) stands in
for the VIP; the proof that nothing of the domain listens on a wildcard address comes from the
kernel's socket table, read twice: with psutil and with ``ss -ltnp``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import Node, tagged_under

pytestmark = pytest.mark.timeout(240)  # includes waiting for PORTS_LOCK and CLI runs on a loaded machine

VIP = "127.0.0.2"


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


def _ss_listening(pids: set[int]) -> set[tuple[str, int]]:
    """``ss -ltnp``: (address, port) of every listening socket held by one of ``pids``."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6 or not any(f"pid={p}," in fields[5] for p in pids):
            continue
        addr, _, port = fields[3].rpartition(":")
        found.add((addr.strip("[]"), int(port)))
    return found


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_bound_domain_listens_only_on_the_bind_address(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    r = node.run("set", "domain1", f"domain.bind.address={VIP}", "domain.access.log=false")
    assert r.returncode == 0, r.stderr
    text = (root / "domain1" / "config" / "domain.properties").read_text()
    assert f"domain.bind.address={VIP}" in text and "domain.hostname=localhost" in text  # the rest kept

    assert node.run("start", "domain1").returncode == 0
    pids = {p.pid for p in tagged_under(root / "domain1")}
    listening = _listening(pids)
    services = {10080, 12809}  # app and naming of the seed's domain1 (+10000)
    assert {(VIP, p) for p in services} <= listening, listening
    assert ("127.0.0.1", 16212) in listening  # the admin API: loopback by default
    assert all(ip in (VIP, "127.0.0.1") for ip, _ in listening), listening
    assert not [a for a in listening if a[0] in ("0.0.0.0", "::")], listening
    if shutil.which("ss"):
        assert _ss_listening(pids) == listening

    assert httpx.get(f"http://{VIP}:10080/").status_code == 200
    assert _refused("127.0.0.1", 10080) and _refused("127.0.0.1", 12809)
    assert _refused(VIP, 16212)
    # the naming service advertises the bind address when no advertised host is set
    assert httpx.get(f"http://{VIP}:12809/names/domain1").json()["url"] == f"http://{VIP}:10080/"
    st = httpx.get("http://127.0.0.1:16212/status", auth=("admin", "adminadmin")).json()
    assert st["bind_address"] == VIP and st["admin_bind_address"] == "127.0.0.1"
    h = node.run("health", "domain1", "--password", "adminadmin")
    assert h.returncode == 0, h.stderr

    # a running domain is not changed
    r = node.run("set", "domain1", "domain.bind.address=127.0.0.3")
    assert r.returncode == 1 and "domain1 is running" in r.stderr and "stop it" in r.stderr
    assert f"domain.bind.address={VIP}" in (root / "domain1" / "config" / "domain.properties").read_text()

    node.run("stop", "domain1", check=True)
    # the admin API elsewhere, on purpose; an advertised host of its own
    node.run(
        "set", "domain1", f"domain.admin.bind.address={VIP}", "domain.advertised.host=vip.test", check=True
    )
    node.run("start", "domain1", check=True)
    listening = _listening({p.pid for p in tagged_under(root / "domain1")})
    assert (VIP, 16212) in listening and all(ip == VIP for ip, _ in listening), listening
    assert httpx.get(f"http://{VIP}:12809/names/domain1").json()["url"] == "http://vip.test:10080/"
    assert node.run("health", "domain1", "--password", "adminadmin").returncode == 0
    node.run("stop", "domain1", check=True)


def test_admin_api_on_loopback_by_default(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    node.run("start", "domain1", check=True)
    listening = _listening({p.pid for p in tagged_under(root / "domain1")})
    assert ("127.0.0.1", 16212) in listening
    assert ("0.0.0.0", 10080) in listening  # default bind: every address, as before
    node.run("stop", "domain1", check=True)


def test_address_not_on_this_node_fails_start_naming_key(node: Node, workdir: Path) -> None:
    node.create("domain1", workdir / "data1" / "domains")
    node.run("set", "domain1", "domain.bind.address=198.18.255.254", check=True)
    r = node.run("start", "domain1")
    assert r.returncode == 1
    assert "domain.http.port" in r.stderr and "198.18.255.254" in r.stderr and "not an address" in r.stderr
    assert not tagged_under(workdir)


def test_set_validates_like_create(node: Node, workdir: Path) -> None:
    root1, root2 = workdir / "data1" / "domains", workdir / "data2" / "domains"
    node.create("domain1", root1)
    node.create("domain2", root2)
    props = root2 / "domain2" / "config" / "domain.properties"
    before = props.read_bytes()

    r = node.run("set", "domain2", "domain.http.port=10080")  # domain1's app port
    assert r.returncode == 1
    assert "10080" in r.stderr and "domain1" in r.stderr and "domain.http.port" in r.stderr
    r = node.run("set", "domain2", "domain.bind.address=vip", "domain.workers=0")
    assert r.returncode == 1
    assert "domain.bind.address" in r.stderr and "IP address" in r.stderr
    assert "domain.workers" in r.stderr  # every error at once
    r = node.run("set", "domain2", "domain.name=other")
    assert r.returncode == 1 and "domain.name" in r.stderr
    r = node.run("set", "domain2", "domain.jms.port=eighty")
    assert r.returncode == 1 and "domain.jms.port" in r.stderr and "1-65535" in r.stderr
    assert props.read_bytes() == before  # nothing half-applied
    assert node.run("set", "domain2", "no-equals-sign").returncode == 2
    assert node.run("set", "nosuch", "a=b").returncode == 1

    # the admin password becomes a new hash, never a property
    old_hash = (root2 / "domain2" / "config" / "admin.argon2").read_text()
    r = node.run("set", "domain2", "domain.admin.password=s3cret-new", "domain.workers=2")
    assert r.returncode == 0, r.stderr
    assert "s3cret-new" not in r.stdout + r.stderr
    new_hash = root2 / "domain2" / "config" / "admin.argon2"
    assert new_hash.read_text() != old_hash and new_hash.stat().st_mode & 0o077 == 0
    assert b"s3cret-new" not in props.read_bytes() and b"domain.workers=2" in props.read_bytes()
    # KEY= removes the key
    node.run("set", "domain2", "domain.workers=", check=True)
    assert b"domain.workers" not in props.read_bytes()
    assert json.loads((root2 / "domain2" / "state" / "state.json").read_text())["state"] == "not running"
