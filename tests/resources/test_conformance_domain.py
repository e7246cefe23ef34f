"""domain resource and monitor, for real: a domain created from the seed's ``domain1.properties``.

No root needed: the domain listens on ports shifted from the seed's (80 -> 80 + offset), with an
offset chosen so the ports it binds are free on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from kagemusha.domains import NodeRegistry, create_domain, domain_state, start_domain, stop_domain
from kagemusha.monitors import MonitorContext, monitor_class
from kagemusha.monitors.domain import DomainMonitor, DomainMonitorParams
from kagemusha.resources import ProbeState, ResourceContext, StartEnv, driver_class
from kagemusha.resources.domain import DomainParams, DomainResource
from kagemusha.testing import check_driver

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"
pytestmark = pytest.mark.timeout(180)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _offset() -> int:
    for _ in range(200):
        off = random.randrange(21000, 45000)
        # bound by the domain: http 80, admin 6212, naming 2809; the admin domain's port 6202
        if all(_free(p + off) for p in (80, 6212, 2809, 6202)):
            return off
    raise RuntimeError("no free port range for the test domain")


def _tagged_under(base: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        if p.info["pid"] == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get("KAGEMUSHA_DOMAIN", "").startswith(str(base)):
                found.append(p)
    return found


class Node:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.offset = _offset()
        self.registry = NodeRegistry(base / "registry")
        self.root = base / "data1" / "domains"
        self.root.mkdir(parents=True)
        props = base / "domain1.properties"
        lines = []
        for line in (SEED / "domain1.properties").read_text(encoding="latin-1").splitlines():
            m = re.match(r"^([^#!=\s][^=]*?)\s*=\s*(\d+)\s*$", line)
            if m and "port" in m.group(1).lower():
                line = f"{m.group(1)}={int(m.group(2)) + self.offset}"
            lines.append(line)
        lines.append("domain.app=kagemusha.demo_app:app")
        props.write_text("\n".join(lines) + "\n", encoding="latin-1")
        create_domain("domain1", props, domaindir=self.root, admin_user="admin", admin_password="adminadmin",
                      admin_port=6202 + self.offset, registry=self.registry)
        self.pwfile = base / "domain1.pw"
        fd = os.open(self.pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("adminadmin\n")

    def params(self, **extra: object) -> dict[str, object]:
        return {"domain": "domain1", "domaindir": str(self.root), "wait_timeout": 5, "start_wait": 60,
                "registry": str(self.registry.path), **extra}

    def ctx(self) -> ResourceContext:
        return ResourceContext("c", "webotx1", "dom1", "n1", self.base / "state")

    def monitor(self, **extra: object) -> DomainMonitor:
        p = {"domain": "domain1", "domaindir": str(self.root), "registry": str(self.registry.path),
             "password_file": str(self.pwfile), "request_timeout": 2.0, **extra}
        return DomainMonitor(DomainMonitorParams.model_validate(p),
                             MonitorContext("c", "webotx1", "otxw1", "n1", self.base / "state"))


@pytest.fixture
def node() -> Iterator[Node]:
    base = Path(tempfile.mkdtemp(prefix="kg-conf-domain-"))
    try:
        yield Node(base)
    finally:
        for _ in range(3):
            procs = _tagged_under(base)
            if not procs:
                break
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGKILL)
            psutil.wait_procs(procs, timeout=2)
        shutil.rmtree(base, ignore_errors=True)


def test_registered() -> None:
    assert driver_class("domain") is DomainResource
    assert monitor_class("domain") is DomainMonitor


def test_params() -> None:
    assert DomainParams(domain="domain1").wait_timeout == 300
    for bad in ({"domain": "admin"}, {"domain": "d1", "domaindir": "relative/path"}, {"domain": "d1", "colour": 1},
                {"domain": "d1", "wait_timeout": -1}):
        with pytest.raises(ValidationError):
            DomainParams.model_validate(bad)
    for bad in ({"domain": "d1"}, {"domain": "d1", "password": "x", "password_file": "/x"},
                {"domain": "d1", "password": ""}, {"domain": "d1", "password_file": ""}):
        with pytest.raises(ValidationError):
            DomainMonitorParams.model_validate(bad)
    # an inline password is refused, saying why, and the error does not repeat it
    with pytest.raises(ValidationError) as info:
        DomainMonitorParams.model_validate({"domain": "d1", "password": "s3cret", "password_file": "/x"})
    assert "password_file" in str(info.value) and "cluster store" in str(info.value) and "s3cret" not in str(info.value)


def test_conformance(node: Node) -> None:
    def really(step: str, running: bool) -> None:
        st = domain_state("domain1", node.root, registry=node.registry)
        assert (st.value == "running") == running, f"domain is {st.value}"
        assert bool(_tagged_under(node.base)) == running, "processes of the domain"

    report = asyncio.run(check_driver(DomainResource, node.params(), ctx=node.ctx(), after_step=really))
    assert "probe after fence again -> stopped" in str(report)
    assert not _tagged_under(node.base)


def test_probe_when_the_disk_is_absent(node: Node, tmp_path: Path) -> None:
    # domaindir not mounted here (the standby's view): STOPPED, and stop succeeds.
    d = DomainResource(DomainParams.model_validate(node.params(domaindir=str(tmp_path / "not-mounted"))), node.ctx())
    assert asyncio.run(d.probe()).state == ProbeState.STOPPED
    asyncio.run(d.stop(StartEnv()))
    with pytest.raises(Exception, match="not present"):
        asyncio.run(d.start(StartEnv()))


def test_start_cancelled_leaves_nothing(node: Node) -> None:
    d = DomainResource(DomainParams.model_validate(node.params()), node.ctx())

    async def go() -> bool:
        # NB: well under a domain's start (about 0.25 s since the fast start): the caller gives up midway.
        try:
            async with asyncio.timeout(0.02):
                await d.start(StartEnv())
        except TimeoutError:
            return True
        return False

    assert asyncio.run(go()), "the start finished before the caller gave up: nothing was cancelled"
    assert not _tagged_under(node.base)
    assert asyncio.run(d.probe()).state == ProbeState.STOPPED


def test_monitor(node: Node) -> None:
    mon = node.monitor()
    res = asyncio.run(mon.check())
    assert not res.ok and "not running" in res.detail
    start_domain("domain1", node.root, registry=node.registry)
    try:
        res = asyncio.run(mon.check())
        assert res.ok, res.detail
        wrong = node.base / "wrong-pw"
        wrong.write_text("wrong-password\n")
        wrong.chmod(0o600)
        bad = node.monitor(password_file=str(wrong))
        res = asyncio.run(bad.check())
        assert not res.ok and "401" in res.detail and "wrong-password" not in res.detail
        # kill -9 of the domain: the monitor says so
        from kagemusha.domains import kill_domain

        kill_domain("domain1", node.root, registry=node.registry)
        res = asyncio.run(mon.check())
        assert not res.ok, res.detail
    finally:
        stop_domain("domain1", node.root, force=True, wait_timeout=0, registry=node.registry)


def test_monitor_password_file_checks(node: Node, tmp_path: Path) -> None:
    loose = tmp_path / "pw"
    loose.write_text("adminadmin\n")
    loose.chmod(0o644)
    params = DomainMonitorParams.model_validate({"domain": "domain1", "password_file": str(loose)})
    errs = DomainMonitor.check_params(params)
    assert errs and errs[0][0] == "password_file" and "chmod 600" in errs[0][1]
    assert DomainMonitor.check_params(
        DomainMonitorParams.model_validate({"domain": "domain1", "password_file": str(node.pwfile)})
    ) == []
