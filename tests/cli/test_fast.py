"""The fast path (cli/_fast.py) agrees with the typer declarations of the commands it runs.

It takes a plain invocation of ``status`` and ``domain list/start/stop`` without typer; anything
else goes to typer. These tests pin that the two cannot drift apart: the same options (every
spelling), kinds, defaults and bounds; the same parameters for the same argv; and whatever the
fast path does not take plainly is left to typer. Structure only, never time.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import typer.main

from kagemusha.cli import _fast
from kagemusha.cli._app import build_app

KINDS = {"flag": bool, "str": str, "path": Path, "float": float, "int": int}


def bound(p: Any, which: str) -> Any:
    """typer's ``min=``/``max=`` of an option (on the option in typer 0.2x, on its click type before)."""
    return getattr(p, which, None) if hasattr(p, which) else getattr(getattr(p, "type", None), which, None)


def typer_command(words: tuple[str, ...]) -> Any:
    group = typer.main.get_command(build_app([words[0]]))
    ctx = typer.Context(group)
    cmd = group.get_command(ctx, words[0])  # type: ignore[attr-defined]
    for w in words[1:]:
        cmd = cmd.get_command(ctx, w)
    assert cmd is not None, words
    return cmd


@pytest.mark.parametrize("words", list(_fast.COMMANDS), ids=" ".join)
def test_the_table_matches_the_typer_declaration(words: tuple[str, ...]) -> None:
    fast = _fast.COMMANDS[words]
    cmd = typer_command(words)
    options = {p.name: p for p in cmd.params if p.param_type_name == "option" and p.name != "help"}
    arguments = [p.name for p in cmd.params if p.param_type_name == "argument"]
    assert list(fast.args) == arguments
    assert {o.dest for o in fast.opts} == set(options)
    for o in fast.opts:
        p = options[o.dest]
        assert set(o.names) == {*p.opts, *p.secondary_opts}, o.dest
        assert p.default == o.default, o.dest
        assert not p.multiple and not getattr(p, "envvar", None), o.dest
        if o.kind == "flag":
            assert p.is_flag and not p.secondary_opts, o.dest
        assert (bound(p, "min"), bound(p, "max")) == (o.low, o.high), o.dest
        descriptor = getattr(p, "type_descriptor", None)
        if descriptor is not None:
            assert descriptor.annotation is KINDS[o.kind], o.dest


def test_every_fast_command_is_a_typer_command_with_an_alias_of_the_same_body() -> None:
    for words, fast in _fast.COMMANDS.items():
        same = [w for w, f in _fast.COMMANDS.items() if f is fast]
        assert words in same
        typer_command(words)  # exists


PLAIN = [
    (["domain", "list"], {"domaindir": None}),
    (["domain", "list-domains", "--domaindir=/d"], {"domaindir": Path("/d")}),
    (["domain", "start", "d1", "--timeout", "5"], {"name": "d1", "domaindir": None, "adminonly": False, "timeout": 5.0}),
    (["domain", "start-domain", "--domaindir", "/x", "d1"],
     {"name": "d1", "domaindir": Path("/x"), "adminonly": False, "timeout": 120.0}),
    (["domain", "start", "admin", "--adminonly"], {"name": "admin", "domaindir": None, "adminonly": True, "timeout": 120.0}),
    (["domain", "stop-domain", "d1", "--force", "--wait_timeout=0"],
     {"name": "d1", "domaindir": None, "force": True, "wait_timeout": 0.0}),
    (["domain", "stop", "d1", "--wait-timeout", "30.5"], {"name": "d1", "domaindir": None, "force": False, "wait_timeout": 30.5}),
    (["status"], {"config": None, "as_json": False, "events": 0}),
    (["status", "--json", "-c", "c.toml", "-e", "5"], {"config": "c.toml", "as_json": True, "events": 5}),
]


def typer_values(argv: list[str]) -> dict[str, Any]:
    """The parameters typer gives the command for ``argv`` (parsed, not run)."""
    words = tuple(argv[:2]) if argv[0] == "domain" else tuple(argv[:1])
    cmd = typer_command(words)
    ctx = cmd.make_context(" ".join(words), argv[len(words):])
    return dict(ctx.params)


@pytest.mark.parametrize(("argv", "expected"), PLAIN, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_plain_argv_gives_what_typer_gives(argv: list[str], expected: dict[str, Any]) -> None:
    words = tuple(argv[:2]) if argv[0] == "domain" else tuple(argv[:1])
    values = _fast.parse(_fast.COMMANDS[words], argv[len(words):])
    assert values == expected
    assert typer_values(argv) == expected
    assert _fast.match(argv) is not None


@pytest.mark.parametrize("argv", [
    ["domain", "list", "--help"], ["domain", "list", "--domaindir"], ["domain", "list", "--domaindir", ""],
    ["domain", "list", "extra"], ["domain", "list", "--domaindir", "a", "--domaindir", "b"],
    ["domain", "start"], ["domain", "start", "a", "b"], ["domain", "start", "d", "--timeout", "0.05"],
    ["domain", "start", "d", "--timeout", "1e3"], ["domain", "start", "d", "--timeout", "abc"],
    ["domain", "start", "d", "--adminonly"], ["domain", "start", "d", "--adminonly=yes"],
    ["domain", "start", "--", "d"], ["domain", "start", "-d"], ["domain", "stop", "d", "--wait_timeout", "-1"],
    ["domain", "create", "d"], ["domain"], ["status", "--events", "501"], ["status", "-e5"], ["status", "-c=x"],
    ["status", "--config", "-x"], ["status", "--bogus"], ["status", "extra"], ["status", "--json=1"],
])
def test_anything_else_is_left_to_typer(argv: list[str]) -> None:
    assert _fast.match(argv) is None


def test_status_register_keeps_the_show_signature() -> None:
    from kagemusha.cli.status import show

    assert list(inspect.signature(show).parameters) == ["config", "as_json", "events"]


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch, *, fast: bool) -> tuple[Any, str, str]:
    import contextlib
    import io

    from kagemusha.cli._app import main

    if not fast:
        monkeypatch.setattr(_fast, "match", lambda args: None)
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    monkeypatch.undo()
    return code, out.getvalue(), err.getvalue()


def test_both_paths_print_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same exit code, stdout and stderr through the fast path and through typer, failures included."""
    monkeypatch.setenv("KAGEMUSHA_DOMAIN_REGISTRY", str(tmp_path / "registry"))
    (tmp_path / "domains").mkdir()
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nname = 'x'\napi_token_file = 3\n")
    cases = [
        ["domain", "list", "--domaindir", str(tmp_path / "domains")],
        ["domain", "start", "nosuch", "--domaindir", str(tmp_path / "domains")],
        ["domain", "stop-domain", "nosuch", "--force", "--wait_timeout=0"],
        ["status", "--json", "--config", str(tmp_path / "missing.toml")],
        ["status", "-c", str(bad)],
    ]
    for argv in cases:
        fast = run_main(argv, monkeypatch, fast=True)
        monkeypatch.setenv("KAGEMUSHA_DOMAIN_REGISTRY", str(tmp_path / "registry"))
        slow = run_main(argv, monkeypatch, fast=False)
        monkeypatch.setenv("KAGEMUSHA_DOMAIN_REGISTRY", str(tmp_path / "registry"))
        assert fast == slow, argv
        assert fast[0] in (0, 1, 2) and "Traceback" not in fast[2], (argv, fast)
