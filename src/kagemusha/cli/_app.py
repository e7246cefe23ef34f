"""Root typer app; subcommand groups live one per file and are attached here."""

from __future__ import annotations

import sys

import typer

from kagemusha.errors import KagemushaError

app = typer.Typer(
    name="kagemusha",
    help="kagemusha: high-availability cluster manager for application servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _attach() -> None:
    # Imported here so each file can import ``app`` helpers without cycles.
    from kagemusha.cli import domain

    app.add_typer(domain.app, name="domain")
    for mod in ("config", "agent", "status", "group", "node", "monitor", "service", "procedure", "compat"):
        try:
            module = __import__(f"kagemusha.cli.{mod}", fromlist=["register"])
        except ModuleNotFoundError as exc:  # a part not built yet
            if exc.name != f"kagemusha.cli.{mod}":
                raise
            continue
        module.register(app)


def main() -> None:
    """Console entry point."""
    _attach()
    try:
        app()
    except KagemushaError as exc:  # expected failure: one line, no traceback
        print(f"kagemusha: {exc}", file=sys.stderr)
        sys.exit(1)
