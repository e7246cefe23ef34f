"""Shared CLI plumbing: config loading with exit 2, async runner, error mapping, JSON/table output.

Typer-free (issue 12): the fast path (``_fast``) runs the hot commands with these helpers and
without importing typer. Failures exit with ``SystemExit``, which typer lets through unchanged
(the same exit code as ``typer.Exit``). The typer option declarations shared by several commands
(``ConfigOpt``, ``JsonOpt``, ``WaitOpt``) are made on first access (PEP 562).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from kagemusha.errors import ConfigError, KagemushaError, StoreUnavailable

if TYPE_CHECKING:
    from rich.console import Console

    from kagemusha.config import Config

T = TypeVar("T")

DEFAULT_CONFIG = "/etc/kagemusha/cluster.toml"


class LazyConsole:
    """A rich ``Console`` made on first need: plain lines (``markup=False``) are written without importing rich.

    Rich costs tens of milliseconds to import; most commands print one plain line.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        self.stderr = stderr
        self._console: Console | None = None

    @property
    def file(self) -> TextIO:
        return sys.stderr if self.stderr else sys.stdout

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self.stderr, highlight=False, soft_wrap=True)
        return self._console

    def print(self, *objects: Any, markup: bool | None = None, **kwargs: Any) -> None:
        if markup is False and not kwargs and all(isinstance(o, str) for o in objects):
            self.file.write(" ".join(objects) + "\n")
            self.file.flush()
        else:
            self.console.print(*objects, markup=markup, **kwargs)


err = LazyConsole(stderr=True)
out = LazyConsole()



def __getattr__(name: str) -> Any:
    """The shared typer options, made (and typer imported) only by the commands that declare them."""
    if name not in ("ConfigOpt", "JsonOpt", "WaitOpt"):  # NB: `from ... import` asks for __path__ first
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import typer

    if name == "ConfigOpt":
        value = typer.Option(None, "--config", "-c", help=f"cluster.toml (default: $KAGEMUSHA_CONFIG or {DEFAULT_CONFIG})",
                             show_default=False)
    elif name == "JsonOpt":
        value = typer.Option(False, "--json", help="print JSON instead of a table")
    else:
        value = typer.Option(120.0, "--wait", min=0, help="seconds to wait for the action to complete")
    globals()[name] = value
    return value


def fail(msg: str, code: int = 1) -> NoReturn:
    """One line ``kagemusha: MSG`` on stderr, then exit ``code``."""
    err.print(f"kagemusha: {msg}", markup=False)
    raise SystemExit(code)


def print_config_errors(exc: ConfigError) -> None:
    for loc, msg in exc.errors:
        err.print(f"{loc}: {msg}" if loc else msg, markup=False)


def config_path(path: str | None) -> str:
    return path or os.environ.get("KAGEMUSHA_CONFIG") or DEFAULT_CONFIG


def get_config(path: str | None, *, client: bool = False) -> Config:
    """The config, or exit 2 with every error. ``client``: a command that only talks to the cluster
    (through its API or store) skips the check of the groups' drivers, which the agents do."""
    from kagemusha.config import load_config

    try:
        return load_config(config_path(path), check_drivers=not client)
    except ConfigError as exc:
        print_config_errors(exc)
        raise SystemExit(2) from None


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; map expected errors to exit codes with one clear line, never a traceback."""
    from kagemusha.control import UsageError

    try:
        import asyncio

        return asyncio.run(fn())  # type: ignore[arg-type]
    except UsageError as exc:
        fail(str(exc), 2)
    except StoreUnavailable as exc:
        fail(f"cannot reach the cluster store: {exc}")
    except KagemushaError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
