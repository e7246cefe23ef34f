"""The import directions of DESIGN.md, and the store protocol's one home, checked on the source.

Every ``import``/``from`` of every module (at any depth: a lazy import inside a function counts too) is
read with ``ast``; the forbidden edges below must not appear, and there is no cycle between packages.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kagemusha"


def _part(module: str) -> str:
    """``kagemusha.agent._agent`` -> ``agent``; ``kagemusha._supervisor`` -> ``_supervisor``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> dict[str, set[str]]:
    """Package (first level under kagemusha) -> the packages it imports."""
    graph: dict[str, set[str]] = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        me = _part(module) if module != "kagemusha" else ""
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                if n.startswith("kagemusha.") and _part(n) != me:
                    graph.setdefault(me, set()).add(_part(n))
    return graph


GRAPH = _imports()

FORBIDDEN = [
    ("cluster", "resources"), ("cluster", "store"), ("cluster", "api"), ("cluster", "cli"), ("cluster", "agent"),
    ("cluster", "monitors"), ("cluster", "protocol"), ("cluster", "control"),
    ("api", "agent"), ("api", "cli"),
    ("control", "agent"), ("control", "api"), ("control", "cli"),
    ("protocol", "agent"), ("protocol", "control"), ("protocol", "api"),
    ("domains", "cluster"), ("domains", "agent"), ("domains", "control"), ("domains", "protocol"),
    ("resources", "agent"), ("resources", "cluster"), ("monitors", "agent"), ("monitors", "cluster"),
]


@pytest.mark.parametrize(("src", "dst"), FORBIDDEN, ids=[f"{a}-x->{b}" for a, b in FORBIDDEN])
def test_forbidden_import(src: str, dst: str) -> None:
    assert dst not in GRAPH.get(src, set()), f"kagemusha.{src} imports kagemusha.{dst}"


def test_nothing_imports_the_cli() -> None:
    assert [p for p, deps in GRAPH.items() if "cli" in deps and p not in ("cli", "", "__main__")] == []


def test_no_cycle_between_agent_api_and_control() -> None:
    for a, b in (("agent", "api"), ("agent", "control"), ("api", "control")):
        assert not (b in GRAPH.get(a, set()) and a in GRAPH.get(b, set())), f"{a} <-> {b}"


#: A key of the layout: a string (or an f-string part after ``{root}``) that starts with a top-level key.
#: API paths start with "/" and are not keys.
KEY = re.compile(r"""["'}](?:members|groups|events|standby|suspend)/""")


def test_no_key_string_outside_the_store_protocol() -> None:
    offenders = []
    for f in SRC.rglob("*.py"):
        # protocol/: the one home; store/: the generic contract's own examples; testing/: fakes.
        if f.parent.name in ("protocol", "store") or "testing" in f.parts:
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if KEY.search(code):
                offenders.append(f"{f.relative_to(SRC)}:{i}: {line.strip()}")
    assert offenders == []
