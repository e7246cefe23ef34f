"""The seed's Linux start.sh/stop.sh (verbatim, only the otxadmin path substituted) run as exec resources."""

from __future__ import annotations

from pathlib import Path

from tests.integration.cluster import LocalCluster

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"
OTXADMIN = "/opt/WebOTX/bin/otxadmin"


def install_seed_scripts(c: LocalCluster, variant: str) -> tuple[Path, Path, Path]:
    calls = c.dir / "otxadmin.calls"
    fake = c.dir / "otxadmin"
    fake.write_text(f'#!/bin/sh\necho "$KAGEMUSHA_NODE $CLP_EVENT $*" >> {calls}\nexit 0\n')
    fake.chmod(0o755)
    out = []
    for name in ("start.sh", "stop.sh"):
        text = (SEED / variant / name).read_text()
        assert OTXADMIN in text
        p = c.dir / f"seed-{variant}-{name}"
        p.write_text(text.replace(OTXADMIN, str(fake)))
        p.chmod(0o755)
        out.append(p)
    return out[0], out[1], calls


def test_seed_oneway_scripts_unmodified(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    start, stop, calls = install_seed_scripts(c, "oneway")
    c.groups = [{"name": "webotx1", "nodes": ["n1", "n2"],
                 "resources": [{"name": "exec1", "type": "exec", "start": str(start), "stop": str(stop)}]}]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    assert calls.read_text().splitlines() == ["n1 START start-domain admin"]
    assert "NORMAL1" in c.log("n1") and "NORMAL2" in c.log("n1")
    r = c.cli("group", "move", "webotx1", "--to", "n2", "--wait", "30")
    assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines()[1:] == [
        "n1 START stop-domain --force --wait_timeout 300 domain1",
        "n1 START stop-domain --force --wait_timeout 300 admin",
        "n2 START start-domain admin",
    ]
    assert "ON_OTHER1" in c.log("n2")
    c.crash("n2")
    c.wait_group("webotx1", "online", "n1", timeout=10)
    assert calls.read_text().splitlines()[-1] == "n1 FAILOVER start-domain admin"
    assert "FAILOVER1" in c.log("n1") and "FAILOVER2" in c.log("n1")


def test_seed_twoway_scripts_unmodified(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    start, stop, calls = install_seed_scripts(c, "twoway")
    c.groups = [{"name": "webotx1", "nodes": ["n1", "n2"],
                 "resources": [{"name": "exec1", "type": "exec", "start": str(start), "stop": str(stop)}]}]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    c.crash("n1")
    c.wait_group("webotx1", "online", "n2", timeout=10)
    assert calls.read_text().splitlines() == [
        "n1 START start-domain --domaindir /data1/domains domain1",
        "n2 FAILOVER start-domain --domaindir /data1/domains domain1",
    ]
    assert "ON_OTHER2" in c.log("n2")
    assert c.leave("n2") == 0
    assert calls.read_text().splitlines()[-1] == "n2 FAILOVER stop-domain --force --wait_timeout 300 --domaindir /data1/domains domain1"
