"""The ``kagemusha`` command. Thin: every subcommand calls the library.

Exit codes: 0 success, 1 the operation failed (one clear line why), 2 bad usage
or invalid input (config, flags).

Lazy: importing this package imports no subcommand (see ``_app``); ``app``, the
whole CLI as one typer app, is built on first access.
"""

from __future__ import annotations

from typing import Any

from kagemusha.cli._app import main

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from kagemusha.cli._app import build_app

        return build_app()
    raise AttributeError(name)
