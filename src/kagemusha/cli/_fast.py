"""The fast path: a plain invocation of a hot command runs without typer (issue 12: cold start <= 0.25 s).

Why: typer (0.2x and later) builds a pydantic ``TypeAdapter`` for every parameter it parses, so
any typer command costs typer's import plus pydantic's, about 0.2 s of CPU on this project's
2-core machine before the command does anything; ``kagemusha domain list`` spent 0.29 s of CPU
in all, and ``kagemusha domain start`` (the seed's ``otxadmin start-domain``, on the failover
path) paid the same before it spawned the domain. The hot commands (``status``, ``domain
list``, ``domain start``, ``domain stop``) are parsed here when their arguments are plain and
valid; anything else (``--help``, an unknown, repeated or malformed flag, a value out of range,
a missing argument) goes through typer exactly as before, so help texts and error messages
come from one place. The commands' bodies are shared with their typer declarations
(``status.show``, ``_domain_run``); ``tests/cli/test_fast.py`` checks that the table below agrees
with those declarations (names, kinds, defaults, bounds) and that both paths print the same.

What is accepted, per token, is a strict subset of what click accepts with the same meaning:
``--name VALUE``, ``--name=VALUE``, a short alias followed by its value as a separate token, a
flag without a value, and positional arguments that do not start with ``-``; each option at
most once, values not empty and not starting with ``-``, numbers written as plain decimals.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["COMMANDS", "Fast", "Opt", "match"]


class Opt(NamedTuple):
    """One option of a fast command, as its typer declaration has it."""

    dest: str  #: the parameter's name in the command function
    names: tuple[str, ...]  #: every spelling (long and short)
    kind: str  #: "flag", "str", "path", "float" or "int"
    default: Any
    low: float | None = None  #: inclusive bounds, as typer's ``min=`` / ``max=``
    high: float | None = None


class Fast(NamedTuple):
    """A command that the fast path may run: its required positional arguments, its options, its body."""

    args: tuple[str, ...]
    opts: tuple[Opt, ...]
    run: Callable[[dict[str, Any]], None]


def _status(v: dict[str, Any]) -> None:
    from kagemusha.cli.status import show

    show(v["config"], v["as_json"], v["events"])


def _domain(body: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """A domain command's body with the domain commands' failure handling (``domain._handled``)."""

    def run(v: dict[str, Any]) -> None:
        from kagemusha.cli._domain_run import failure_lines, print_failure

        try:
            body(v)
        except Exception as exc:
            lines = failure_lines(exc)
            if lines is None:
                raise
            print_failure(lines)
            raise SystemExit(1) from None

    return run


def _domain_list(v: dict[str, Any]) -> None:
    from kagemusha.cli._domain_run import list_domains

    list_domains(v["domaindir"])


def _domain_start(v: dict[str, Any]) -> None:
    from kagemusha.cli._domain_run import start

    start(v["name"], v["domaindir"], adminonly=v["adminonly"], timeout=v["timeout"])


def _domain_stop(v: dict[str, Any]) -> None:
    from kagemusha.cli._domain_run import stop

    stop(v["name"], v["domaindir"], force=v["force"], wait_timeout=v["wait_timeout"])


_DOMAINDIR = Opt("domaindir", ("--domaindir",), "path", None)
_LIST = Fast((), (_DOMAINDIR,), _domain(_domain_list))
_START = Fast(("name",), (_DOMAINDIR, Opt("adminonly", ("--adminonly",), "flag", False),
                          Opt("timeout", ("--timeout",), "float", 120.0, low=0.1)), _domain(_domain_start))
_STOP = Fast(("name",), (_DOMAINDIR, Opt("force", ("--force",), "flag", False),
                         Opt("wait_timeout", ("--wait_timeout", "--wait-timeout"), "float", 300.0, low=0)),
             _domain(_domain_stop))

#: The commands of the fast path, by their path of words (the seed's verbs too).
COMMANDS: dict[tuple[str, ...], Fast] = {
    ("status",): Fast((), (Opt("config", ("--config", "-c"), "str", None), Opt("as_json", ("--json",), "flag", False),
                           Opt("events", ("--events", "-e"), "int", 0, low=0, high=500)), _status),
    ("domain", "list"): _LIST,
    ("domain", "list-domains"): _LIST,
    ("domain", "start"): _START,
    ("domain", "start-domain"): _START,
    ("domain", "stop"): _STOP,
    ("domain", "stop-domain"): _STOP,
}

_INT = re.compile(r"[0-9]{1,9}")
_FLOAT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


def _value(opt: Opt, text: str) -> Any:
    """``text`` converted as typer would, or ``None`` when it is not plainly valid (typer then says why)."""
    if not text or text.startswith("-"):
        return None
    if opt.kind == "str":
        return text
    if opt.kind == "path":
        return Path(text)
    if opt.kind == "int" and _INT.fullmatch(text):
        n: float = int(text)
    elif opt.kind == "float" and _FLOAT.fullmatch(text):
        n = float(text)
    else:
        return None
    if (opt.low is not None and n < opt.low) or (opt.high is not None and n > opt.high):
        return None
    return n


def parse(fast: Fast, tokens: list[str]) -> dict[str, Any] | None:
    """The command's parameters from ``tokens``, or ``None`` when typer must parse them."""
    by_name = {name: opt for opt in fast.opts for name in opt.names}
    values: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token:
            return None
        if not token.startswith("-"):
            positional.append(token)
            continue
        name, eq, text = token.partition("=") if token.startswith("--") else (token, "", "")
        opt = by_name.get(name)
        if opt is None or opt.dest in values:
            return None  # --help, --, an unknown or repeated option
        if opt.kind == "flag":
            if eq:
                return None
            values[opt.dest] = True
            continue
        if not eq:
            if i >= len(tokens):
                return None
            text = tokens[i]
            i += 1
        value = _value(opt, text)
        if value is None:
            return None
        values[opt.dest] = value
    if len(positional) != len(fast.args):
        return None
    values.update(zip(fast.args, positional, strict=True))
    for opt in fast.opts:
        values.setdefault(opt.dest, opt.default)
    return values


def match(args: list[str]) -> Callable[[], None] | None:
    """What runs ``kagemusha ARGS`` without typer, or ``None`` when typer must handle them."""
    for words in (tuple(args[:2]), tuple(args[:1])):
        fast = COMMANDS.get(words)
        if fast is not None:
            values = parse(fast, args[len(words):])
            if values is None:
                return None
            if values.get("adminonly") and values.get("name") != "admin":
                return None  # typer's error: --adminonly applies to the admin domain only
            return lambda: fast.run(values)
    return None
