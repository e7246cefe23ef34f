"""Hypothesis: the CLI's flags. Any argv gives exit 0, 1 or 2 with plain lines on stderr, never a traceback.

Commands are taken from the real command tree; their own flags are mixed with unknown ones, missing
or odd values, numbers and dashes. ``main()`` runs in process (as the console script does), with no
config and a private domain registry, so nothing reaches a cluster or the machine. A usage error
(unknown flag, missing or bad argument) is exactly one line: ``<command>: <what> (see <command> --help)``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from hypothesis import given, settings
from hypothesis import strategies as st

from kagemusha.cli._app import build_app, main
from tests.fuzz.conftest import examples

#: Commands that would set up real processes given lucky arguments: not fuzzed here.
SKIP = {("domain", "setup"), ("domain", "start"), ("domain", "start-domain")}


def _tree() -> list[tuple[tuple[str, ...], list[str]]]:
    app = build_app()  # every subcommand attached (the CLI itself attaches only the one that runs)
    out: list[tuple[tuple[str, ...], list[str]]] = []

    def walk(c: Any, prefix: tuple[str, ...]) -> None:
        subs = getattr(c, "commands", None)
        if subs:
            for n, s in subs.items():
                walk(s, (*prefix, n))
        elif prefix not in SKIP:
            out.append((prefix, [o for p in c.params if p.param_type_name == "option" for o in p.opts]))

    walk(typer.main.get_command(app), ())
    return out


TREE = _tree()
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
VALUES = TEXT | st.sampled_from(["-", "--", "", "-1", "0", "1e999", "nan", "inf", "--json", "-c", "n1", "webotx1",
                                 "--wait=-5", "--wait", "=", "--config=", "99999999999999999999"])


@st.composite
def argvs(draw: Any) -> list[str]:
    path, opts = draw(st.sampled_from(TREE))
    flag = st.sampled_from(opts or ["--x"]) | st.text(st.sampled_from("-abcxyz_="), min_size=1, max_size=8).map(lambda s: "--" + s)
    rest = draw(st.lists(flag | VALUES, max_size=5))
    cut = draw(st.integers(0, len(path)))  # sometimes an incomplete command path
    return [*path[:cut], *rest] if draw(st.integers(0, 4)) == 0 else [*path, *rest]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    keys = ("KAGEMUSHA_CONFIG", "KAGEMUSHA_HOME", "KAGEMUSHA_DOMAIN_REGISTRY", "KAGEMUSHA_ADMIN_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="kg-fuzz-cli-") as d:
        os.environ.update({"KAGEMUSHA_CONFIG": f"{d}/none/cluster.toml", "KAGEMUSHA_HOME": f"{d}/home",
                           "KAGEMUSHA_DOMAIN_REGISTRY": f"{d}/registry"})
        os.environ.pop("KAGEMUSHA_ADMIN_PASSWORD", None)
        os.chdir(d)
        try:
            yield d
        finally:
            os.chdir(cwd)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def run_main(argv: list[str]) -> tuple[int, str, str]:
    import sys

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["kagemusha", *argv]
    code: Any = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


@settings(max_examples=examples(40, 1000))
@given(argv=argvs())
def test_any_flags(sandbox: str, argv: list[str]) -> None:
    code, out, err = run_main(argv)
    assert code in (0, 1, 2), (argv, code, err[-1000:])
    assert "Traceback" not in err + out and "╭" not in err, (argv, err[-1000:])
    if "(see " in err:  # a usage error
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)


@pytest.mark.parametrize("argv", [["status", "--bogus"], ["group", "move"], ["group", "start", "g", "--wait", "abc"],
                                  ["nosuch"], ["config", "validate"], ["node", "standby", "n1", "--wait", "-1"]])
def test_bad_usage_is_one_line_exit_2(sandbox: str, argv: list[str]) -> None:
    """Usage errors were a rich box of several lines (typer's default), now one line naming the command."""
    code, _, err = run_main(argv)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("kagemusha") and "(see kagemusha" in line and "--help)" in line, line
