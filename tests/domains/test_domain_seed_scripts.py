"""The seed's Linux start.sh / stop.sh, verbatim but for the otxadmin path and the domains root, run for real.

Only ``/opt/WebOTX/bin/otxadmin`` (-> ``kagemusha domain``) and ``/data1/domains`` (-> a temporary
directory) are substituted; the scripts run with the variables CLUSTERPRO (and kagemusha's exec
resource) gives them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import KAGEMUSHA, SEED, Node, make_node, tagged_under

pytestmark = pytest.mark.timeout(120)


def _script(src: Path, dest: Path, roots: dict[str, Path], *, domain: str | None = None) -> Path:
    text = src.read_text()
    text = text.replace("/opt/WebOTX/bin/otxadmin", f"{KAGEMUSHA} domain")
    for seed_root, root in roots.items():
        text = text.replace(seed_root, str(root))
    if domain is not None:  # the seed: "webotx2's scripts are the same with /data2 and domain2"
        text = text.replace("domain1", domain)
    dest.write_text(text)
    dest.chmod(0o755)
    return dest


def _run(
    node: Node, script: Path, event: str = "START", server: str = "HOME"
) -> subprocess.CompletedProcess[str]:
    env = dict(node.env, CLP_EVENT=event, CLP_DISK="SUCCESS", CLP_SERVER=server)
    return subprocess.run([str(script)], check=False, env=env, capture_output=True, text=True, timeout=90)


def _states(node: Node) -> dict[str, str]:
    lines = node.run("list").stdout.splitlines()[1:]
    return {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in lines}


def test_oneway_scripts_start_and_stop_via_the_admin_domain(workdir: Path) -> None:
    n1, n2 = make_node(workdir, "n1"), make_node(workdir, "n2")
    root = workdir / "data1" / "domains"
    n1.create("domain1", root)
    start = _script(SEED / "oneway" / "start.sh", workdir / "start.sh", {"/data1/domains": root})
    stop = _script(SEED / "oneway" / "stop.sh", workdir / "stop.sh", {"/data1/domains": root})
    assert "kagemusha domain start-domain admin" in start.read_text()

    r = _run(n1, start)
    assert r.returncode == 0 and "NORMAL1" in r.stdout and "NORMAL2" in r.stdout and "EXIT" in r.stdout, (
        r.stderr
    )
    assert "kagemusha:" not in r.stderr, r.stderr
    assert _states(n1) == {"admin": "running", "domain1": "running"}
    assert httpx.get("http://127.0.0.1:10080/").status_code == 200

    r = _run(n1, stop)
    assert r.returncode == 0 and "NORMAL1" in r.stdout and "kagemusha:" not in r.stderr, r.stderr
    assert _states(n1) == {"admin": "not running", "domain1": "not running"}
    assert not tagged_under(workdir)

    # Failover to N2: it registers the root on the switchover disk (setup.env) and runs the same script.
    n2.run("setup", "--domains-root", str(root), "--port", "16202", check=True)
    r = _run(n2, start, event="FAILOVER", server="OTHER")
    assert r.returncode == 0 and "FAILOVER1" in r.stdout and "ON_OTHER2" in r.stdout, r.stderr
    assert _states(n2) == {"admin": "running", "domain1": "running"}
    r = _run(n2, stop, event="FAILOVER", server="OTHER")
    assert r.returncode == 0 and "kagemusha:" not in r.stderr, r.stderr
    assert not tagged_under(workdir)


def test_twoway_scripts_start_and_stop_both_domains(node: Node, workdir: Path) -> None:
    data1, data2 = workdir / "data1" / "domains", workdir / "data2" / "domains"
    node.create("domain1", data1)
    node.create("domain2", data2)
    scripts = {}
    for group, domain, root in (("webotx1", "domain1", data1), ("webotx2", "domain2", data2)):
        roots = {"/data1/domains": root}
        scripts[group] = (
            _script(SEED / "twoway" / "start.sh", workdir / f"{group}-start.sh", roots, domain=domain),
            _script(SEED / "twoway" / "stop.sh", workdir / f"{group}-stop.sh", roots, domain=domain),
        )
    assert f"start-domain --domaindir {data2} domain2" in scripts["webotx2"][0].read_text()

    for start, _ in scripts.values():
        r = _run(node, start)
        assert r.returncode == 0 and "NORMAL2" in r.stdout and "kagemusha:" not in r.stderr, r.stderr
    assert _states(node) == {"admin": "not running", "domain1": "running", "domain2": "running"}
    assert httpx.get("http://127.0.0.1:10080/").status_code == 200
    assert httpx.get("http://127.0.0.1:18081/").status_code == 200

    for _, stop in scripts.values():
        r = _run(node, stop)
        assert r.returncode == 0 and "kagemusha:" not in r.stderr, r.stderr
    assert _states(node) == {"admin": "not running", "domain1": "not running", "domain2": "not running"}
    assert not tagged_under(workdir)
    assert os.environ.get("KAGEMUSHA_DOMAIN") is None
