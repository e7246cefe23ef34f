"""``kagemusha install-service`` writes a unit systemd accepts (``systemd-analyze verify``), or one we parse."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """
[cluster]
name = "svc"
store = "local:{dir}/store.db"
{extra}
[[nodes]]
name = "n1"
address = "127.0.0.1:7701"
[[nodes]]
name = "n2"
address = "127.0.0.1:7702"
[[groups]]
name = "g1"
nodes = ["n1", "n2"]
[[groups.resources]]
name = "exec1"
type = "exec"
start = "/bin/true"
stop = "/bin/true"
stop_timeout = 660
"""


def kagemusha(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kagemusha", *args], check=False, capture_output=True, text=True, timeout=60,
                          env=env)


def parse(unit: Path) -> configparser.RawConfigParser:
    p = configparser.RawConfigParser(strict=False, delimiters=("=",))
    p.optionxform = str  # type: ignore[assignment,method-assign]
    p.read_string(unit.read_text())
    return p


def verify(unit: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        return  # parsed above; nothing more to ask
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    complaints = [ln for ln in (r.stdout + r.stderr).splitlines() if unit.name in ln]
    assert not complaints, complaints


def test_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(CONFIG.format(dir=tmp_path, extra=""))
    r = kagemusha("install-service", "--config", str(cfg), "--node", "n2", "--unit-dir", str(tmp_path / "units"))
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "units" / "kagemusha.service"
    assert f"wrote {unit}" in r.stdout and "systemctl daemon-reload" in r.stderr
    assert unit.stat().st_mode & 0o777 == 0o644
    u = parse(unit)
    svc = u["Service"]
    assert svc["ExecStart"] == f"{sys.executable} -m kagemusha agent --config {cfg} --node n2"
    assert svc["KillMode"] == "mixed" and svc["Restart"] == "on-failure"
    assert int(svc["TimeoutStopSec"]) >= 660 + 30, "covers the slowest group's stop scripts"
    assert svc["StandardOutput"] == "journal" and svc["SyslogIdentifier"] == "kagemusha"
    assert "ExecStartPre" not in svc and "WatchdogSec" not in svc
    assert u["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in u["Unit"]["After"]
    verify(unit)


def test_watchdog_device_and_default_config_path(tmp_path: Path) -> None:
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(CONFIG.format(dir=tmp_path, extra='watchdog = "/dev/watchdog1"\nheartbeat_timeout = 2.0'))
    env = {"PATH": "/usr/bin:/bin", "KAGEMUSHA_NODE": "n1", "HOME": str(tmp_path)}
    # --stdout: print instead of writing; the config named by --config is the one the unit runs with
    r = kagemusha("install-service", "--config", str(cfg), "--stdout", env=env)
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "k.service"
    unit.write_text(r.stdout)
    svc = parse(unit)["Service"]
    assert svc["ExecStartPre"] == "/usr/bin/test -c /dev/watchdog1"
    assert svc["ExecStart"].endswith(f"--config {cfg} --node n1"), "node from $KAGEMUSHA_NODE"
    verify(unit)
    # without --config the unit uses /etc/kagemusha/cluster.toml, the CLI's default
    from kagemusha.cli.service import render_unit
    from kagemusha.config import load_config

    text = render_unit(load_config(cfg), node="n1", config_file="/etc/kagemusha/cluster.toml", python="/usr/bin/python3")
    assert "ExecStart=/usr/bin/python3 -m kagemusha agent --config /etc/kagemusha/cluster.toml --node n1" in text
    assert "Environment=KAGEMUSHA_CONFIG=/etc/kagemusha/cluster.toml" in text


@pytest.mark.parametrize(("args", "words"), [
    (["--node", "n9"], '--node: "n9" is not a node'),
    ([], "--node: say which node"),
    (["--node", "n1", "--name", "bad/name"], "--name"),
])
def test_bad_usage_exits_2(tmp_path: Path, args: list[str], words: str) -> None:
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(CONFIG.format(dir=tmp_path, extra=""))
    r = kagemusha("install-service", "--config", str(cfg), "--unit-dir", str(tmp_path / "u"), *args,
                  env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "u").exists()


def test_specials_in_paths_are_escaped(tmp_path: Path) -> None:
    from kagemusha.cli.service import render_unit
    from kagemusha.config import load_config

    cfg = tmp_path / "cluster.toml"
    cfg.write_text(CONFIG.format(dir=tmp_path, extra=""))
    text = render_unit(load_config(cfg), node="n1", config_file="/etc/my cluster/100%.toml", python="/usr/bin/python3")
    assert 'ExecStart=/usr/bin/python3 -m kagemusha agent --config "/etc/my cluster/100%%.toml" --node n1' in text
    unit = tmp_path / "kagemusha.service"
    unit.write_text(text)
    verify(unit)
