"""Properties parsing and validation: the seed's files, and each bad input naming its key or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kagemusha.domains._properties import (
    check_port_conflicts,
    load_properties,
    parse_properties,
    port_keys,
    redact_password,
    set_key,
)
from kagemusha.errors import ConfigError

from .conftest import SEED, shifted_properties


def test_seed_domain1_parses_with_every_port() -> None:
    props = load_properties(SEED / "domain1.properties")
    assert props.name == "domain1"
    assert props.http_port == 80 and props.admin_port == 6212 and props.naming_port == 2809
    assert props.ports["domain.https.port"] == 443
    assert props.ports["tpsystem.IIOPListener.listenerPortNumber"] == 5151
    assert props.ports["server.corba-service.oadj.Port"] == 9826
    assert props.ports["server.corba-service.oad.OadPort"] == 9825
    # Not ports: booleans and keys that merely contain the letters.
    assert "domain.ipv6-enable" not in props.ports
    assert "server.corba-service.namesv.NameServiceRoundRobin" not in props.ports
    assert props.raw["domain.ipv6-enable"] == "false"  # unknown keys are kept
    assert props.admin_password == "adminadmin"


def test_seed_domain2_and_shifted_copies(tmp_path: Path) -> None:
    d2 = load_properties(shifted_properties(SEED / "domain2.properties", tmp_path / "d2.properties"))
    d1 = load_properties(shifted_properties(SEED / "domain1.properties", tmp_path / "d1.properties"))
    assert d1.http_port == 10080 and d1.ports["domain.https.port"] == 10443
    assert d2.http_port == 18081 and d2.ports["domain.https.port"] == 18443
    assert not check_port_conflicts("domain2", d2.ports, [("domain1", d1.ports)])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("domain.http.port", "eighty"),
        ("tpsystem.IIOPListener.listenerPortNumber", "70000"),
        ("domain.jms.port", "0"),
    ],
)
def test_bad_port_names_the_key(key: str, value: str) -> None:
    raw = dict(load_properties(SEED / "domain1.properties").raw)
    raw[key] = value
    with pytest.raises(ConfigError) as exc:
        parse_properties(raw, source="d1.properties")
    assert any(key in loc and "d1.properties" in loc for loc, _ in exc.value.errors)
    assert "1-65535" in str(exc.value)


def test_duplicate_port_in_one_domain_names_both_keys() -> None:
    raw = dict(load_properties(SEED / "domain1.properties").raw)
    raw["domain.jms.port"] = raw["domain.http.port"]
    with pytest.raises(ConfigError) as exc:
        parse_properties(raw, source="d1.properties")
    msg = str(exc.value)
    assert "domain.jms.port" in msg and "domain.http.port" in msg and "80" in msg


def test_missing_domain_name_names_the_key() -> None:
    raw = dict(load_properties(SEED / "domain1.properties").raw)
    del raw["domain.name"]
    with pytest.raises(ConfigError, match=r"domain\.name"):
        parse_properties(raw, source="d1.properties")


def test_name_must_match_the_domain_created() -> None:
    with pytest.raises(ConfigError, match=r"domain\.name.*domain2"):
        load_properties(SEED / "domain1.properties", name="domain2")


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.properties"
    with pytest.raises(ConfigError) as exc:
        load_properties(missing)
    assert str(missing) in str(exc.value)


def test_own_keys_validated() -> None:
    raw = dict(load_properties(SEED / "domain1.properties").raw)
    raw.update(
        {"domain.app": "not an import string", "domain.workers": "many", "domain.run.user": "no-such-user-km"}
    )
    with pytest.raises(ConfigError) as exc:
        parse_properties(raw, source="x")
    msg = str(exc.value)
    assert "domain.app" in msg and "domain.workers" in msg and "domain.run.user" in msg


def test_conflicts_across_domains_name_both_domains_and_port() -> None:
    d1 = load_properties(SEED / "domain1.properties")
    errs = check_port_conflicts("domain3", {"domain.http.port": 80}, [("domain1", d1.ports)])
    assert errs == [
        ("domain3: domain.http.port", "port 80 is already used by domain domain1 (domain.http.port)")
    ]


def test_port_keys_rule() -> None:
    raw = {
        "a.port": "1",
        "a.Port": "2",
        "b.listenerPortNumber": "3",
        "ssl.support": "4",
        "x.port.enabled": "true",
    }
    assert port_keys(raw) == ["a.port", "a.Port", "b.listenerPortNumber"]


def test_redact_and_set_key_keep_the_rest() -> None:
    text = (SEED / "domain1.properties").read_text()
    red = redact_password(text)
    assert (
        "adminadmin" not in red
        and "# ObjectBroker Service Configs" in red
        and "domain.admin.user=admin" in red
    )
    out = set_key(red, "domain.app", "pkg.mod:app")
    assert out.endswith("domain.app=pkg.mod\\:app\n") or "domain.app=pkg.mod:app" in out
    assert set_key(out, "domain.app", None) == red
