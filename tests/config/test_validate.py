"""Config validation: every error names the file, the key path and what is expected; never a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kagemusha.config import load_config
from kagemusha.errors import ConfigError

GOOD = """
[cluster]
name = "c1"
store = "local:{tmp}/store.db"

[[nodes]]
name = "n1"
address = "127.0.0.1:17101"

[[nodes]]
name = "n2"
address = "127.0.0.1:17102"

[[groups]]
name = "webotx1"
nodes = ["n1", "n2"]

[[groups.resources]]
name = "exec1"
type = "exec"
start = "start.sh"
stop = "stop.sh"

[[groups.monitors]]
name = "mon1"
type = "exec"
command = "true"
"""


@pytest.fixture()
def cfgdir(tmp_path: Path) -> Path:
    for s in ("start.sh", "stop.sh"):
        (tmp_path / s).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / s).chmod(0o755)
    return tmp_path


def write(d: Path, text: str) -> Path:
    p = d / "cluster.toml"
    p.write_text(textwrap.dedent(text).replace("{tmp}", str(d)))
    return p


def errors_of(p: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    return ei.value.errors


def test_good_config_loads(cfgdir: Path) -> None:
    cfg = load_config(write(cfgdir, GOOD))
    assert cfg.cluster.heartbeat_interval == 0.15 and cfg.cluster.heartbeat_timeout == 1.0
    assert cfg.group("webotx1").home == "n1"
    assert cfg.group("webotx1").resources[0].params == {"start": "start.sh", "stop": "stop.sh"}


@pytest.mark.parametrize(
    "edit,key,expect",
    [
        (lambda s: s.replace('stop = "stop.sh"', 'stop = "missing.sh"'), "groups[0].resources[0].stop", "does not exist"),
        (lambda s: s.replace('stop = "stop.sh"', 'stop = "stop.sh"\nbogus = 1'), "groups[0].resources[0].bogus", "unknown key"),
        (lambda s: s.replace('type = "exec"\nstart', 'type = "nfs"\nstart'), "groups[0].resources[0].type", "unknown resource type"),
        (lambda s: s.replace('nodes = ["n1", "n2"]', 'nodes = ["n1", "n9"]'), "groups[0].nodes[1]", 'node "n9" is not defined'),
        (lambda s: s.replace('name = "n2"', 'name = "n1"'), "nodes[1].name", "duplicate name"),
        (lambda s: s.replace('name = "c1"', 'name = "c1"\ncolour = "red"'), "cluster.colour", "unknown key"),
        (lambda s: s.replace('address = "127.0.0.1:17102"', 'address = "nowhere"'), "nodes[1].address", "host:port"),
        (lambda s: s.replace('name = "c1"', 'name = "c1"\nheartbeat_timeout = 0.4'), "cluster.heartbeat_timeout",
         "heartbeat_interval + 2 * cluster.store_timeout + retry back-off + cluster.fence_margin"),
        (lambda s: s.replace('command = "true"', 'command = "true"\nfinal_action = "reboot"'), "groups[0].monitors[0].final_action", "stop_group"),
        (lambda s: s.replace('command = "true"', 'command = "true"\nretries = "two"'), "groups[0].monitors[0].retries", "integer"),
        (lambda s: s.replace('store = "local:', 'store = "zk:'), "cluster.store", "unknown store"),
        (lambda s: s.replace('command = "true"', ''), "groups[0].monitors[0].command", "required"),
    ],
)
def test_bad_configs_name_the_key(cfgdir: Path, edit, key: str, expect: str) -> None:  # type: ignore[no-untyped-def]
    p = write(cfgdir, edit(GOOD))
    errs = errors_of(p)
    locs = {loc: msg for loc, msg in errs}
    want = f"{p}: {key}"
    assert want in locs, f"expected an error at {want}, got {errs}"
    assert expect in locs[want], locs[want]


def test_every_error_is_reported_at_once(cfgdir: Path) -> None:
    text = GOOD.replace('stop = "stop.sh"', 'stop = "missing.sh"').replace('nodes = ["n1", "n2"]', 'nodes = ["n1", "n9"]')
    assert len(errors_of(write(cfgdir, text))) == 2


def test_bad_toml_names_line(cfgdir: Path) -> None:
    p = cfgdir / "cluster.toml"
    p.write_text('[cluster]\nname = "x\n')
    (loc, msg), = errors_of(p)
    assert loc == str(p) and "line 2" in msg


def test_missing_file(tmp_path: Path) -> None:
    (_loc, msg), = errors_of(tmp_path / "nope.toml")
    assert "cannot read" in msg


def test_local_store_refuses_multi_host(cfgdir: Path) -> None:
    text = GOOD.replace('address = "127.0.0.1:17102"', 'address = "127.0.0.1:17102"\nhost = "other"')
    assert any("cluster.store" in loc for loc, _ in errors_of(write(cfgdir, text)))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kagemusha", *args], capture_output=True, text=True, timeout=60, check=False)


def test_cli_validate_exit_codes(cfgdir: Path) -> None:
    good = write(cfgdir, GOOD)
    r = run_cli("config", "validate", str(good))
    assert r.returncode == 0, r.stderr
    bad = cfgdir / "bad.toml"
    bad.write_text(GOOD.replace("{tmp}", str(cfgdir)).replace('stop = "stop.sh"', 'stop = "gone.sh"'))
    r = run_cli("config", "validate", str(bad))
    assert r.returncode == 2
    assert f"{bad}: groups[0].resources[0].stop: script" in r.stderr
    assert "Traceback" not in r.stderr


def test_examples_validate() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    found = sorted(root.glob("*/cluster.toml"))
    assert found, "examples/*/cluster.toml"
    for p in found:
        if p.parent.name.startswith("etcd-"):
            continue  # real-machine example: checked below
        load_config(p)


def test_real_machine_example_only_lacks_its_secret_files() -> None:
    """examples/etcd-oneway names secrets that exist only on the real machines; nothing else is wrong."""
    p = Path(__file__).resolve().parents[2] / "examples" / "etcd-oneway" / "cluster.toml"
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    keys = sorted(loc.split(": ", 1)[1] for loc, _ in ei.value.errors)
    assert keys == ["cluster.api_token_file", "cluster.store_ca_file", "cluster.store_cert_file", "cluster.store_key_file",
                    "groups[0].monitors[0].password_file"], ei.value.errors


def test_etcd_with_a_short_ttl_is_a_warning_not_an_error(cfgdir: Path) -> None:
    text = GOOD.replace('store = "local:{tmp}/store.db"', 'store = "etcd://127.0.0.1:2379"\ninsecure_store = true')
    p = write(cfgdir, text)
    r = run_cli("config", "validate", str(p))
    assert r.returncode == 0, r.stderr
    assert "cluster.heartbeat_timeout: warning:" in r.stderr and "cluster.watchdog: warning:" in r.stderr
