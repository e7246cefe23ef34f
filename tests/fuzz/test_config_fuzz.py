"""Hypothesis: generated ``cluster.toml`` files, valid-ish and broken. ``config validate`` exits 0 or 2, never a traceback.

Documents are built from the schema's own keys (the cluster section, nodes, groups, and each driver's
``Params``) with values of every TOML type, then serialized; broken ones are the same texts with bytes
cut, repeated or replaced. Each one goes through the real command (``kagemusha config validate``, in
process with click's runner, so a thousand files take seconds). Every error line must name the file.
The fast run makes ``examples(25, 1000)`` files of each kind; ``KAGEMUSHA_FUZZ=full`` makes 1,000.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kagemusha.cli._app import build_app
from kagemusha.config import ClusterSection, GroupSpec, MonitorSpec, NodeSpec, ResourceSpec
from kagemusha.monitors import REGISTRY as MONITORS
from kagemusha.monitors import monitor_class
from kagemusha.resources import REGISTRY as RESOURCES
from kagemusha.resources import driver_class
from tests.fuzz.conftest import examples

app = build_app(["config"])
RUNNER = CliRunner()

scalars = st.one_of(
    st.text(max_size=20), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(["", "local:/tmp/x.db", "etcd://127.0.0.1:2379", "127.0.0.1:7701", "n1", "exec", "../x",
                     "/nonexistent/file", "start.sh", "0", "-1", "1e309", "manual", "auto", "stop_group"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=6)


def table(keys: list[str], required: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A TOML table with some of ``keys`` (random values), usually the ``required`` ones right, sometimes an unknown key."""
    return st.fixed_dictionaries(
        {},
        optional={**{k: values for k in keys}, **{k: st.just(v) | values for k, v in required.items()},
                  "unknown_key": values, "password": st.text(max_size=8)},
    )


def _fields(model: Any) -> list[str]:
    return [k for k in model.model_fields if k not in ("params", "source")]


def spec(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    registry, lookup, model = ((RESOURCES, driver_class, ResourceSpec) if kind == "resources"
                               else (MONITORS, monitor_class, MonitorSpec))

    @st.composite
    def one(draw: Any) -> dict[str, Any]:
        typ = draw(st.sampled_from(sorted(registry)) | st.text(max_size=6))
        keys = _fields(model) + (_fields(lookup(typ).Params) if typ in registry else [])
        out = draw(table(keys, {"name": "r1"}))
        if draw(st.booleans()):
            out["type"] = typ
        return out

    return one()


documents = st.fixed_dictionaries(
    {},
    optional={
        "cluster": table(_fields(ClusterSection), {"name": "c1", "store": "local:/tmp/kg-fuzz.db"}),
        "nodes": st.lists(table(_fields(NodeSpec), {"name": "n1", "address": "127.0.0.1:7701"}), max_size=3) | values,
        "groups": st.lists(
            table(_fields(GroupSpec), {"name": "g1", "nodes": ["n1"]}).flatmap(
                lambda g: st.fixed_dictionaries({"resources": st.lists(spec("resources"), max_size=3),
                                                 "monitors": st.lists(spec("monitors"), max_size=3)}).map(
                    lambda rm: {**g, **rm})),
            max_size=2) | values,
        "stray": values,
    },
)


def _toml(doc: dict[str, Any]) -> str:
    try:
        return tomli_w.dumps(doc)
    except (TypeError, ValueError):  # e.g. a key tomli_w cannot write; the document is then plain junk
        return repr(doc)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kg-fuzz-config-") as d:
        (Path(d) / "start.sh").write_text("#!/bin/sh\nexit 0\n")
        (Path(d) / "start.sh").chmod(0o755)
        yield Path(d)


def validate(path: Path) -> None:
    r = RUNNER.invoke(app, ["config", "validate", str(path)])
    text = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert r.exit_code in (0, 2), f"exit {r.exit_code}: {r.exception!r}\n{text[-2000:]}\n--- file ---\n{path.read_text(errors='replace')[:2000]}"
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in text
    if r.exit_code == 2:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert lines and all(ln.startswith(str(path)) for ln in lines), text[-2000:]


@settings(max_examples=examples(25, 1000))
@given(doc=documents)
def test_generated_documents(workdir: Path, doc: dict[str, Any]) -> None:
    p = workdir / "cluster.toml"
    p.write_text(_toml(doc))
    validate(p)


@settings(max_examples=examples(25, 1000))
@given(doc=documents, cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 40), st.binary(max_size=6)),
                                    min_size=1, max_size=4))
def test_broken_documents(workdir: Path, doc: dict[str, Any], cuts: list[tuple[int, int, bytes]]) -> None:
    raw = bytearray(_toml(doc).encode())
    for at, length, junk in cuts:
        at = at % (len(raw) + 1)
        raw[at:at + length] = junk
    p = workdir / "cluster.toml"
    p.write_bytes(bytes(raw))
    validate(p)


def test_float_edge_values_are_clear_errors(workdir: Path) -> None:
    """NaN and infinity are valid TOML floats; every timer refuses them with its key."""
    for key in ("heartbeat_interval", "heartbeat_timeout", "store_timeout", "fence_margin", "startup_wait", "failure_expiry"):  # inf was accepted
        for bad in (math.nan, math.inf, -math.inf):
            p = workdir / "cluster.toml"
            p.write_text(tomli_w.dumps({"cluster": {"name": "c1", "store": "local:/tmp/kg.db", key: bad},
                                        "nodes": [{"name": "n1", "address": "127.0.0.1:7701"}]}))
            r = RUNNER.invoke(app, ["config", "validate", str(p)])
            assert r.exit_code == 2 and f"cluster.{key}" in r.output + r.stderr, (key, bad, r.output + r.stderr)


def test_odd_keys_stay_on_one_line(workdir: Path) -> None:
    """A key with a newline made an error span two lines (the second without the file name)."""
    p = workdir / "cluster.toml"
    p.write_text(tomli_w.dumps({"cluster": {"name": "c1", "store": "local:/tmp/kg.db", "a\nb": 1, "x.y": 2},
                                "nodes": [{"name": "n1", "address": "127.0.0.1:7701", "env": {"K\n": 5}}]}))
    r = RUNNER.invoke(app, ["config", "validate", str(p)])
    assert r.exit_code == 2
    assert f'{p}: cluster."a\\nb": unknown key' in r.output + r.stderr
    assert f'{p}: cluster."x.y": unknown key' in r.output + r.stderr
    assert f'{p}: nodes[0].env."K\\n": ' in r.output + r.stderr
    validate(p)
