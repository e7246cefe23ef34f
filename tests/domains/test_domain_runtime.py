"""Real domains serving real apps: ASGI and WSGI side by side, admin API, naming service, readiness."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from kagemusha.domains import (
    DomainState,
    NodeRegistry,
    check_domain_health,
    domain_state,
    resolve_name,
    start_domain,
    stop_domain,
)
from kagemusha.errors import DomainError

from .conftest import APPS, Node, alive, tagged_under

pytestmark = pytest.mark.timeout(240)  # includes waiting for PORTS_LOCK and CLI runs on a loaded machine


def _domain_pids(domain_dir: Path) -> list[int]:
    return [p.pid for p in tagged_under(domain_dir)]


def test_asgi_and_wsgi_domains_side_by_side(node: Node, workdir: Path) -> None:
    root1, root2 = workdir / "data1" / "domains", workdir / "data2" / "domains"
    node.create("domain1", root1, domain_advertised_host="vip.example.test")
    node.create("domain2", root2, domain_workers="2")
    node.run("deploy", "domain1", "hello_asgi:app", "--path", str(APPS / "hello"), check=True)
    node.run("deploy", "domain2", "flask_app:app", "--path", str(APPS / "flaskapp"), check=True)

    r = node.run("start-domain", "--domaindir", str(root1), "domain1")
    assert r.returncode == 0, r.stderr
    r = node.run("start-domain", "domain2")  # the registry knows where domain2 lives
    assert r.returncode == 0, r.stderr

    # start returned: the apps answer at once
    assert httpx.get("http://127.0.0.1:10080/").text.startswith("hello from asgi")
    assert httpx.get("http://127.0.0.1:18081/").text == "hello from flask\n"
    pids = {httpx.get("http://127.0.0.1:18081/info").json()["pid"] for _ in range(20)}
    assert pids  # two uvicorn workers behind one socket
    assert node.run("list").stdout.splitlines()[1:] == [
        "admin not running",
        "domain1 running",
        "domain2 running",
    ]

    st = json.loads((root1 / "domain1" / "state" / "state.json").read_text())
    assert st["state"] == "running" and st["pid"] == st["pgid"] == st["sid"]  # its own session and group

    # admin API: basic auth against the hash
    assert httpx.get("http://127.0.0.1:16212/status").status_code == 401
    assert httpx.get("http://127.0.0.1:16212/status", auth=("admin", "wrong")).status_code == 401
    st = httpx.get("http://127.0.0.1:16212/status", auth=("admin", "adminadmin")).json()
    assert st["state"] == "running" and st["name"] == "domain1"
    assert httpx.get("http://127.0.0.1:16212/health", auth=("admin", "adminadmin")).status_code == 200

    # naming service advertises the VIP, never localhost
    n = httpx.get("http://127.0.0.1:12809/names/domain1").json()
    assert n["url"] == "http://vip.example.test:10080/"
    r = httpx.put(
        "http://127.0.0.1:12809/names/jdbc/orders",
        json={"port_key": "domain.http.port", "path": "/orders"},
        auth=("admin", "adminadmin"),
    )
    assert r.status_code == 200
    assert httpx.put("http://127.0.0.1:12809/names/x", json={"port": 1}).status_code == 401
    assert (
        httpx.get("http://127.0.0.1:12809/names/jdbc/orders").json()["url"]
        == "http://vip.example.test:10080/orders"
    )
    assert httpx.get("http://127.0.0.1:12809/names/nosuch").status_code == 404
    assert resolve_name("127.0.0.1", 12809, "jdbc/orders") == "http://vip.example.test:10080/orders"
    with pytest.raises(DomainError, match="not bound"):
        resolve_name("127.0.0.1", 12809, "nosuch")
    state_text = "".join(p.read_text() for p in (root1 / "domain1" / "state").iterdir() if p.is_file())
    assert (
        "vip.example" not in state_text
        and "localhost" not in state_text
        and socket.gethostname() not in state_text
    )
    # without a VIP the name service advertises the address the client used
    assert httpx.get("http://127.0.0.1:22809/names/domain2").json()["url"] == "http://127.0.0.1:18081/"

    # the Python API the cluster uses
    reg = NodeRegistry(node.registry)
    assert domain_state("domain1", registry=reg) is DomainState.RUNNING
    h = check_domain_health("domain1", user="admin", password="adminadmin", registry=reg)
    assert h.ok, h
    assert not check_domain_health("domain1", user="admin", password="nope", registry=reg).ok
    assert start_domain("domain1", registry=reg) is DomainState.RUNNING  # started: start again succeeds

    assert node.run("delete", "domain1").returncode == 1  # refuses a running domain

    pids1, pids2 = _domain_pids(root1 / "domain1"), _domain_pids(root2 / "domain2")
    assert len(pids1) >= 2 and len(pids2) >= 4  # master + app server (+ 2 workers)
    assert node.run("stop-domain", "--domaindir", str(root1), "domain1").returncode == 0
    stop_domain("domain2", force=True, wait_timeout=30, registry=reg)
    assert not [p for p in pids1 + pids2 if alive(p)]
    assert node.run("list").stdout.splitlines()[1:] == [
        "admin not running",
        "domain1 not running",
        "domain2 not running",
    ]
    assert not check_domain_health("domain1", user="admin", password="adminadmin", registry=reg).ok
    with pytest.raises(DomainError, match="did not answer"):
        resolve_name("127.0.0.1", 12809, "domain1", attempts=2, delay=0.05)
    assert node.run("stop", "domain1").returncode == 0  # stopping a stopped domain succeeds
    # after a whole life (create, start, API calls with the password, stop), no file holds it
    for base in (root1, root2, node.registry):
        for f in base.rglob("*"):
            if f.is_file():
                assert b"adminadmin" not in f.read_bytes(), f
    # logs are in the domain's logs/
    assert "state=running" in (root1 / "domain1" / "logs" / "domain.log").read_text()
    assert (root2 / "domain2" / "logs" / "access.log").read_text().count("GET /info") >= 1


def test_start_refused_when_port_taken(node: Node, workdir: Path) -> None:
    node.create("domain1", workdir / "data1" / "domains")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 10080))
        s.listen()
        r = node.run("start", "domain1")
    assert r.returncode == 1
    assert "10080" in r.stderr and "domain.http.port" in r.stderr and "Traceback" not in r.stderr
    assert not tagged_under(workdir)


def test_broken_app_fails_start_with_a_reason(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    node.run("deploy", "domain1", "no_such_module:app", check=True)
    r = node.run("start", "domain1", timeout=60)
    assert r.returncode == 1
    assert "domain1" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not tagged_under(workdir)
    assert json.loads((root / "domain1" / "state" / "state.json").read_text())["state"] == "not running"


def test_concurrent_starts_make_one_domain(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    import subprocess

    from .conftest import KAGEMUSHA

    procs = [
        subprocess.Popen(
            [KAGEMUSHA, "domain", "start", "domain1"], env=node.env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    assert [rc for rc, _ in results] == [0, 0], results
    masters = [p for p in tagged_under(root) if "kagemusha.domains._runtime" in " ".join(p.cmdline())]
    assert len(masters) == 1
    assert node.run("stop", "domain1").returncode == 0
    assert not tagged_under(workdir)


def test_app_that_never_answers_is_killed_after_the_start_timeout(node: Node, workdir: Path) -> None:
    app_dir = workdir / "hangapp"
    app_dir.mkdir()
    (app_dir / "hang_app.py").write_text(
        "import time\n\n\nasync def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        time.sleep(600)  # blocks startup: never answers\n"
    )
    node.create("domain1", workdir / "data1" / "domains")
    node.run("deploy", "domain1", "hang_app:app", "--path", str(app_dir), check=True)
    r = node.run("start", "--timeout", "3", "domain1")
    assert r.returncode == 1
    assert "did not answer within 3 s" in r.stderr and "killed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not tagged_under(workdir)
    assert node.run("list").stdout.splitlines()[1:] == ["admin not running", "domain1 not running"]
