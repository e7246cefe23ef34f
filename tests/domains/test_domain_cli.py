"""`kagemusha domain` without running domains: create, conflicts, secrets, list, delete, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kagemusha.domains import NodeRegistry, list_domains

from .conftest import Node, make_node

pytestmark = pytest.mark.timeout(60)


def test_create_with_seed_flags_and_list(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    props = node.seed_properties("domain1")
    r = node.run(
        "create-domain", "--user", "admin", "--password", "adminadmin", "--port", "16202",
        f"--file={props}", f"--domaindir={root}", "domain1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "plain text" in r.stderr and "domain.admin.password" in r.stderr  # warned, not modified
    assert "adminadmin" in props.read_text()
    assert (root / "domain1" / "config" / "domain.properties").is_file()
    for sub in ("logs", "state", "apps"):
        assert (root / "domain1" / sub).is_dir()
    # the registry remembers where domain1 lives
    reg = json.loads((node.registry / "registry.json").read_text())
    assert reg["domains"]["domain1"] == str(root)
    r = node.run("list-domains")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("List of domains")
    assert lines[1:] == ["admin not running", "domain1 not running"]
    r = node.run("list", "--domaindir", str(root))
    assert r.stdout.splitlines()[1:] == ["domain1 not running"]


def test_password_only_as_hash(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    for base in (root, node.registry):
        for f in base.rglob("*"):
            if f.is_file():
                assert b"adminadmin" not in f.read_bytes(), f
    h = (root / "domain1" / "config" / "admin.argon2").read_text().strip()
    assert h.startswith("$argon2")
    assert (root / "domain1" / "config" / "admin.argon2").stat().st_mode & 0o077 == 0
    assert (node.registry / "admin.argon2").read_text().startswith("$argon2")  # the admin domain's hash
    assert (node.registry / "admin.argon2").stat().st_mode & 0o077 == 0


def test_port_conflict_refused_naming_both(node: Node, workdir: Path) -> None:
    node.create("domain1", workdir / "data1" / "domains")
    # domain2 with one of domain1's ports (its http port on domain1's jms port 19700)
    props = node.seed_properties("domain2")
    text = props.read_text().replace("domain.http.port=18081", "domain.http.port=19700")
    props.write_text(text)
    r = node.run("create", "--file", str(props), "--domaindir", str(workdir / "data2" / "domains"), "domain2")
    assert r.returncode == 1
    assert "19700" in r.stderr and "domain1" in r.stderr and "domain2" in r.stderr
    assert "domain.jms.port" in r.stderr and "domain.http.port" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (workdir / "data2" / "domains" / "domain2").exists()


def test_admin_port_reserved_and_credentials_checked(node: Node, workdir: Path) -> None:
    node.create("domain1", workdir / "data1" / "domains")
    props = node.seed_properties("domain2")
    props.write_text(props.read_text().replace("domain.http.port=18081", "domain.http.port=16202"))
    r = node.run("create", "--file", str(props), "domain2")
    assert r.returncode == 1 and "16202" in r.stderr and "admin" in r.stderr
    props = node.seed_properties("domain2")
    r = node.run("create", "--user", "admin", "--password", "wrong", "--file", str(props), "domain2")
    assert r.returncode == 1 and "refused" in r.stderr


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace("domain.jms.port=19700", "domain.jms.port=x9700"), "domain.jms.port"),
        (lambda t: t.replace("domain.jms.port=19700", "domain.jms.port=10080"), "domain.jms.port"),
        (lambda t: t.replace("domain.name=domain1\n", ""), "domain.name"),
    ],
)
def test_bad_properties_exit_1_naming_the_key(node: Node, edit: object, needle: str) -> None:
    props = node.seed_properties("domain1")
    props.write_text(edit(props.read_text()))  # type: ignore[operator]
    r = node.run("create", "--file", str(props), "domain1")
    assert r.returncode == 1
    assert needle in r.stderr and str(props) in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreadable_file_names_the_file(node: Node) -> None:
    r = node.run("create", "--file", str(node.base / "missing.properties"), "domain1")
    assert r.returncode == 1 and "missing.properties" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_exit_2(node: Node) -> None:
    assert node.run("stop", "--no-such-flag", "domain1").returncode == 2
    assert node.run("create", "domain1").returncode == 2  # --file missing
    assert node.run("stop", "--wait_timeout", "soon", "domain1").returncode == 2
    assert node.run("start", "--adminonly", "domain1").returncode == 2


def test_unknown_domain_one_line(node: Node) -> None:
    for verb in ("start-domain", "stop-domain", "delete-domain"):
        r = node.run(verb, "nosuch")
        assert r.returncode == 1 and "nosuch" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_delete_and_autostart(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    assert node.run("autostart", "--disable", "domain1").returncode == 0
    assert json.loads((root / "domain1" / "config" / "kagemusha.json").read_text())["autostart"] is False
    r = node.run("delete-domain", "--user", "admin", "--password", "adminadmin", "--port", "16202",
                 f"--domaindir={root}", "domain1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not (root / "domain1").exists()
    assert "domain1" not in json.loads((node.registry / "registry.json").read_text())["domains"]


def test_setup_registers_a_root_from_another_node(workdir: Path) -> None:
    n1, n2 = make_node(workdir, "n1"), make_node(workdir, "n2")
    root = workdir / "data1" / "domains"
    n1.create("domain1", root)
    assert [i.name for i in list_domains(registry=NodeRegistry(n2.registry))] == ["admin"]
    r = n2.run("setup", "--domains-root", str(root))
    assert r.returncode == 0 and "domain1" in r.stdout
    assert [i.name for i in list_domains(registry=NodeRegistry(n2.registry))] == ["admin", "domain1"]


def test_deploy_sets_the_app(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    from .conftest import APPS

    assert node.run("deploy", "domain1", "hello_asgi:app", "--path", str(APPS / "hello")).returncode == 0
    text = (root / "domain1" / "config" / "domain.properties").read_text()
    assert "domain.app=hello_asgi\\:app" in text or "domain.app=hello_asgi:app" in text
    assert (root / "domain1" / "apps" / "hello" / "hello_asgi.py").is_file()
    assert node.run("deploy", "domain1", "bad import").returncode == 1
