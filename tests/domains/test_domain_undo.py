"""Undo on a standby: ``domain setup --remove``, and ``delete`` of a domain whose directory is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import Node, make_node, tagged_under

pytestmark = pytest.mark.timeout(240)  # includes waiting for PORTS_LOCK and CLI runs on a loaded machine


def _registry(node: Node) -> dict[str, object]:
    return dict(json.loads((node.registry / "registry.json").read_text()))


def test_setup_remove_is_the_inverse_of_setup(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    n2 = make_node(workdir, "n2")
    n2.run("setup", "--domains-root", str(root), "--port", "16202", check=True)
    assert n2.run("list").stdout.splitlines()[1:] == ["admin not running", "domain1 not running"]
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    # a running domain of the root is not forgotten
    n2.run("start", "domain1", check=True)
    r = n2.run("setup", "--remove", "--domains-root", str(root))
    assert r.returncode == 1 and "domain1" in r.stderr and "stop them first" in r.stderr
    n2.run("stop", "domain1", check=True)

    r = n2.run("setup", "--remove", "--domains-root", str(root))
    assert r.returncode == 0, r.stderr
    assert "domain1" in r.stdout
    reg = _registry(n2)
    assert reg["roots"] == [] and reg["domains"] == {}
    assert n2.run("list").stdout.splitlines()[1:] == ["admin not running"]
    assert (root / "domain1" / "config" / "domain.properties").is_file()  # the disk is untouched
    after = {p.relative_to(root) for p in root.rglob("*")}
    assert set(before) <= after
    r = n2.run("setup", "--remove", "--domains-root", str(root))
    assert r.returncode == 1 and "not a domains root registered" in r.stderr
    # the node that created it still has it; and setup works again after the undo
    assert node.run("list").stdout.splitlines()[1:] == ["admin not running", "domain1 not running"]
    n2.run("setup", "--domains-root", str(root), check=True)
    assert n2.run("list").stdout.splitlines()[1:] == ["admin not running", "domain1 not running"]
    assert not tagged_under(workdir)


def test_delete_of_a_domain_whose_directory_is_gone(node: Node, workdir: Path) -> None:
    root = workdir / "data2" / "domains"
    node.create("domain2", root)
    shutil.rmtree(root / "domain2")
    r = node.run("delete-domain", "domain2")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "stale" in r.stderr and str(root / "domain2") in r.stderr
    assert "domain2" not in dict(_registry(node)["domains"])  # type: ignore[call-overload]
    r = node.run("delete-domain", "domain2")
    assert r.returncode == 1 and "does not exist" in r.stderr
