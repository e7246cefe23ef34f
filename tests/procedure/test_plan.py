"""``kagemusha init``: the plan from the site's facts (pure, no root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kagemusha.config import load_config
from kagemusha.domains import load_properties
from kagemusha.errors import ConfigError
from kagemusha.procedure import load_plan, parse_facts, render_plan, write_plan


@pytest.fixture
def pw(tmp_path: Path) -> Path:
    p = tmp_path / "admin.pw"
    p.write_text("adminadmin\n")
    p.chmod(0o600)
    return p


def facts(tmp_path: Path, pw: Path, topology: str = "one-way", **kw: object):  # type: ignore[no-untyped-def]
    two = topology == "two-way"
    args: dict[str, object] = {
        "nodes": "n1=198.18.0.11,n2=198.18.0.12:7701",
        "vip": "198.18.0.100/24,198.18.0.101/24" if two else "198.18.0.100/24",
        "interface": "eth0",
        "disk": "/dev/loop7,/dev/loop8" if two else "/dev/loop7",
        "mount": f"{tmp_path}/data1,{tmp_path}/data2" if two else f"{tmp_path}/data1",
        "store": f"local:{tmp_path}/store.db",
        "admin_password_file": str(pw),
    }
    args.update(kw)
    return parse_facts(topology, **args)  # type: ignore[arg-type]


def test_one_way_plan_is_valid_and_the_seeds(tmp_path: Path, pw: Path) -> None:
    f = facts(tmp_path, pw)
    files = render_plan(f)
    write_plan(files, tmp_path / "plan")
    cfg = load_config(tmp_path / "plan" / "cluster.toml")
    (g,) = cfg.groups
    assert g.name == "webotx1" and g.nodes == ("n1", "n2")
    assert [r.name for r in g.resources] == ["fip1", "sd1", "exec1"]
    assert [m.type for m in g.monitors] == ["domain"]
    assert cfg.node("n2").address == "198.18.0.12:7701" and cfg.node("n1").address == "198.18.0.11:7700"
    props = load_properties(tmp_path / "plan" / "domain1.properties", name="domain1")
    assert props.raw["domain.bind.address"] == "198.18.0.100" and props.advertised_host == "198.18.0.100"
    assert props.admin_password is None  # never in the plan
    start = (tmp_path / "plan" / "webotx1" / "start.sh").read_text()
    assert "otxadmin" not in start and "domain start-domain admin" in start
    assert "webotx1/start.sh" in files and "PLAN.md" in files
    plan = load_plan(tmp_path / "plan")
    assert plan.first_node == "n1" and plan.groups[0].http_port == 80


def test_two_way_ports_unique_and_scripts_per_group(tmp_path: Path, pw: Path) -> None:
    write_plan(render_plan(facts(tmp_path, pw, "two-way")), tmp_path / "plan")
    cfg = load_config(tmp_path / "plan" / "cluster.toml")
    assert [(g.name, g.nodes) for g in cfg.groups] == [("webotx1", ("n1", "n2")), ("webotx2", ("n2", "n1"))]
    p1 = load_properties(tmp_path / "plan" / "domain1.properties")
    p2 = load_properties(tmp_path / "plan" / "domain2.properties")
    assert not set(p1.ports.values()) & set(p2.ports.values())
    assert 6202 not in set(p1.ports.values()) | set(p2.ports.values())
    s2 = (tmp_path / "plan" / "webotx2" / "stop.sh").read_text()
    assert f"--domaindir {tmp_path}/data2/domains domain2" in s2 and "domain1" not in s2


def test_bad_flags_one_entry_each(tmp_path: Path, pw: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        facts(tmp_path, pw, "two-way", nodes="n1=1.2.3.4", vip="198.18.0.100", disk="sdb", store="local:rel",
              interface="bad/if")
    flags = [loc for loc, _ in exc.value.errors]
    assert all(loc.startswith("--") for loc in flags)
    assert {"--nodes", "--vip", "--disk", "--store", "--interface"} <= set(flags)


def test_password_file_must_be_private(tmp_path: Path, pw: Path) -> None:
    pw.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        facts(tmp_path, pw)


def test_port_clash_with_the_admin_domain_is_refused(tmp_path: Path, pw: Path) -> None:
    with pytest.raises(ConfigError, match="port 80 is already used by the admin domain"):
        render_plan(facts(tmp_path, pw, admin_port=80))


def test_non_empty_out_needs_force_and_a_refused_plan_writes_nothing(tmp_path: Path, pw: Path) -> None:
    out = tmp_path / "plan"
    out.mkdir()
    (out / "x").write_text("x")
    files = render_plan(facts(tmp_path, pw))
    with pytest.raises(ConfigError, match="--force"):
        write_plan(files, out)
    broken = dict(files)
    broken["cluster.toml"] = files["cluster.toml"].replace('interface = "eth0"', 'interface = "eth0"\nbogus = 1')
    with pytest.raises(ConfigError):
        write_plan(broken, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["x"]
    write_plan(files, out, force=True)
    assert (out / "cluster.toml").exists()


def test_an_edited_plan_is_refused(tmp_path: Path, pw: Path) -> None:
    write_plan(render_plan(facts(tmp_path, pw)), tmp_path / "plan")
    p = tmp_path / "plan" / "domain1.properties"
    p.write_text(p.read_text().replace("domain.http.port=80", "domain.http.port=81"))
    with pytest.raises(ConfigError, match="changed after init"):
        load_plan(tmp_path / "plan")


def test_cli_init_bad_flags_exit_2_one_line_each(tmp_path: Path, pw: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kagemusha", "init", "two-way", "--out", str(tmp_path / "p"), "--nodes", "n1=a",
         "--vip", "198.18.0.100/24", "--interface", "eth0", "--disk", "/dev/x", "--mount", "/data1",
         "--store", f"local:{tmp_path}/s.db", "--admin-password-file", str(pw)],
        capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 4 and all(x.startswith("kagemusha: --") for x in lines), lines
    assert not (tmp_path / "p").exists()
