"""`config validate` reports every error of a file in one run; insecure etcd and inline passwords are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.config.test_validate import GOOD, errors_of, write

__all__: list[str] = []


@pytest.fixture()
def d(tmp_path: Path) -> Path:
    """A directory with the scripts GOOD names."""
    for s in ("start.sh", "stop.sh"):
        (tmp_path / s).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / s).chmod(0o755)
    return tmp_path


def keys_of(p: Path) -> dict[str, str]:
    return {loc.split(": ", 1)[1]: msg for loc, msg in errors_of(p)}


def validate(p: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kagemusha", "config", "validate", str(p)],
                          check=False, capture_output=True, text=True, timeout=60)


def test_unknown_key_and_unknown_resource_type_both_reported(d: Path) -> None:
    text = (GOOD.replace('name = "c1"', 'name = "c1"\ncolour = "red"')
            .replace('type = "exec"\nstart', 'type = "nfs"\nstart'))
    keys = keys_of(write(d, text))
    assert keys.keys() == {"cluster.colour", "groups[0].resources[0].type"}, keys
    assert keys["cluster.colour"] == "unknown key"
    assert "unknown resource type" in keys["groups[0].resources[0].type"] and "exec" in keys["groups[0].resources[0].type"]


def test_errors_in_every_table_at_once(d: Path) -> None:
    """Schema errors (unknown keys, bad values) and semantic ones (missing script, unknown node) together."""
    text = (GOOD.replace('name = "c1"', 'name = "c1"\ncolour = "red"\nheartbeat_timeout = 0.4')
            .replace('address = "127.0.0.1:17102"', 'address = "nowhere"')
            .replace('nodes = ["n1", "n2"]', 'nodes = ["n1", "n9"]\nshade = 1')
            .replace('stop = "stop.sh"', 'stop = "missing.sh"')
            .replace('command = "true"', 'command = "true"\nretries = "two"\nbogus = 1'))
    p = write(d, text)
    keys = keys_of(p)
    want = {
        "cluster.colour": "unknown key",
        "nodes[1].address": "host:port",
        "groups[0].shade": "unknown key",
        "groups[0].resources[0].stop": "does not exist",
        "groups[0].monitors[0].retries": "integer",
    }
    for key, expect in want.items():
        assert key in keys and expect in keys[key], (key, keys)
    # the CLI prints each with the file and key path, then the count; exit 2, no traceback
    r = validate(p)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for key in want:
        assert f"{p}: {key}: " in r.stderr, r.stderr
    assert f"{p}: {len(errors_of(p))} error(s)" in r.stderr


def test_bad_cluster_section_still_checks_the_groups(d: Path) -> None:
    text = GOOD.replace('store = "local:{tmp}/store.db"', 'store = 5').replace('command = "true"', 'command = "true"\ninterval = -1')
    keys = keys_of(write(d, text))
    assert {"cluster.store", "groups[0].monitors[0].interval"} <= keys.keys(), keys


def test_bad_group_still_checks_its_resources(d: Path) -> None:
    text = GOOD.replace('nodes = ["n1", "n2"]', 'nodes = "n1"').replace('stop = "stop.sh"', 'stop = "missing.sh"')
    keys = keys_of(write(d, text))
    assert {"groups[0].nodes", "groups[0].resources[0].stop"} <= keys.keys(), keys


def test_duplicate_names_reported_beside_schema_errors(d: Path) -> None:
    text = GOOD.replace('name = "n2"', 'name = "n1"').replace('name = "c1"', 'name = "c1"\ncolour = 1')
    keys = keys_of(write(d, text))
    assert {"nodes[1].name", "cluster.colour"} <= keys.keys(), keys


# -- an etcd store must be secured, or insecure on purpose --------------------------------------------------------


ETCD = 'store = "etcd://127.0.0.1:2379"\nheartbeat_timeout = 3.0'


def test_etcd_without_tls_or_auth_is_refused(d: Path) -> None:
    p = write(d, GOOD.replace('store = "local:{tmp}/store.db"', ETCD))
    keys = keys_of(p)
    assert "root on every node" in keys["cluster.store"] and "insecure_store = true" in keys["cluster.store"]
    r = validate(p)
    assert r.returncode == 2 and "cluster.store" in r.stderr


def test_insecure_store_on_purpose_is_a_warning(d: Path) -> None:
    p = write(d, GOOD.replace('store = "local:{tmp}/store.db"', ETCD + "\ninsecure_store = true"))
    r = validate(p)
    assert r.returncode == 0, r.stderr
    assert f"{p}: cluster.insecure_store: warning:" in r.stderr and "root on every node" in r.stderr


def _secret(d: Path, name: str, mode: int = 0o600) -> str:
    f = d / name
    f.write_text("x\n")
    f.chmod(mode)
    return str(f)


def test_etcd_with_client_certificate_or_auth_is_accepted(d: Path) -> None:
    cert, key, pw = _secret(d, "c.pem"), _secret(d, "k.pem"), _secret(d, "pw")
    for extra in (f'store_cert_file = "{cert}"\nstore_key_file = "{key}"',
                  f'store_user = "root"\nstore_password_file = "{pw}"'):
        p = write(d, GOOD.replace('store = "local:{tmp}/store.db"', ETCD + "\n" + extra))
        r = validate(p)
        assert r.returncode == 0, r.stderr
        assert "insecure" not in r.stderr


def test_half_secured_etcd_names_the_missing_key(d: Path) -> None:
    cert = _secret(d, "c.pem")
    p = write(d, GOOD.replace('store = "local:{tmp}/store.db"', ETCD + f'\nstore_cert_file = "{cert}"\nstore_user = "u"'))
    keys = keys_of(p)
    assert "go together" in keys["cluster.store_key_file"] and "go together" in keys["cluster.store_password_file"]


def test_store_password_file_must_be_private(d: Path) -> None:
    pw = _secret(d, "pw", 0o644)
    p = write(d, GOOD.replace('store = "local:{tmp}/store.db"', ETCD + f'\nstore_user = "u"\nstore_password_file = "{pw}"'))
    assert "chmod 600" in keys_of(p)["cluster.store_password_file"]


# -- no inline secret ----------------------------------------------------------------------------------------------


DOMAIN_MONITOR = """
[[groups.monitors]]
name = "otxw1"
type = "domain"
domain = "domain1"
"""


@pytest.mark.parametrize(("table", "key"), [
    (DOMAIN_MONITOR + 'password = "s3cret-inline"\npassword_file = "{tmp}/pw"', "groups[0].monitors[1].password"),
    ('\n[[groups.resources]]\nname = "dom1"\ntype = "domain"\ndomain = "domain1"\npassword = "s3cret-inline"',
     "groups[0].resources[1].password"),
])
def test_inline_password_is_refused_with_the_reason(d: Path, table: str, key: str) -> None:
    _secret(d, "pw")
    p = write(d, GOOD + table)
    keys = keys_of(p)
    assert key in keys, keys
    assert "cluster store" in keys[key] and "password_file" in keys[key] and "chmod 600" in keys[key]
    r = validate(p)
    assert r.returncode == 2 and "s3cret-inline" not in r.stderr + r.stdout


def test_inline_store_password_is_refused(d: Path) -> None:
    p = write(d, GOOD.replace('name = "c1"', 'name = "c1"\nstore_password = "s3cret-inline"'))
    assert "password_file" in keys_of(p)["cluster.store_password"]


def test_domain_monitor_password_file_must_be_private(d: Path) -> None:
    _secret(d, "pw", 0o640)
    p = write(d, GOOD + DOMAIN_MONITOR + 'password_file = "pw"')
    assert "chmod 600" in keys_of(p)["groups[0].monitors[1].password_file"]
    (d / "pw").chmod(0o600)
    assert validate(p).returncode == 0


def test_inline_password_never_reaches_the_store(d: Path) -> None:
    """`config apply` refuses the file (exit 2), so `config show --toml` has nothing to print."""
    p = write(d, GOOD + DOMAIN_MONITOR + 'password = "s3cret-inline"')
    run = [sys.executable, "-m", "kagemusha", "config"]
    r = subprocess.run([*run, "apply", str(p)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "password_file" in r.stderr and "s3cret-inline" not in r.stderr + r.stdout
    assert not (d / "store.db").exists() or "s3cret-inline" not in (d / "store.db").read_bytes().decode("latin-1")
    good = write(d, GOOD)
    r = subprocess.run([*run, "show", "--toml", "--config", str(good)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert "s3cret-inline" not in r.stdout + r.stderr and "no config applied" in r.stderr, r.stdout + r.stderr
