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
    if app.registered_groups:  # attached already (main() run twice in one process, as the CLI fuzz test does)
        return
    from kagemusha.cli import domain

    app.add_typer(domain.app, name="domain")
    for mod in ("config", "agent", "status", "group", "node", "monitor", "service"):
        try:
            module = __import__(f"kagemusha.cli.{mod}", fromlist=["register"])
        except ModuleNotFoundError as exc:  # a part not built yet
            if exc.name != f"kagemusha.cli.{mod}":
                raise
            continue
        module.register(app)


def main() -> None:
    """Console entry point: every failure is one line on stderr, never a traceback.

    Exit codes: 0 ok, 1 failed, 2 bad usage (unknown flag, missing or bad argument), 130 interrupted.
    """
    _attach()
    from typer import Abort

    # NB: recent typer carries its own copy of click, whose exceptions are not click's.
    try:
        from typer._click import exceptions as cx
    except ImportError:  # typer on click itself
        import click.exceptions as cx  # type: ignore[no-redef]
    try:
        rc = app(standalone_mode=False, prog_name="kagemusha")
    except cx.NoArgsIsHelpError as exc:  # e.g. `kagemusha config`: the group's help, as before
        print(exc.ctx.get_help() if exc.ctx else exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except cx.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "kagemusha"
        print(f"{where}: {_one_line(exc.format_message())} (see {where} --help)", file=sys.stderr)
        sys.exit(2)
    except cx.ClickException as exc:
        print(f"kagemusha: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Abort:
        print("kagemusha: interrupted", file=sys.stderr)
        sys.exit(130)
    except KagemushaError as exc:  # expected failure: one line, no traceback
        print(f"kagemusha: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())
