"""Root of the ``kagemusha`` command: a table of subcommands, each imported only when it runs.

A subcommand lives in its own module (``kagemusha.cli.<module>``) with either a
``register(root)`` function that attaches its command(s) to the root typer app,
or a module-level typer ``app`` that becomes the group ``<name>``. To add one,
add a line to ``COMMANDS``: its name, its module, and the one-line help shown
by ``kagemusha --help`` (a test checks that line matches the command's own help).

Why a table: importing every subcommand (typer, rich, pydantic models, httpx,
FastAPI, the agent) costs most of a second before anything happens.
``kagemusha --help`` prints from the table without importing typer at all; a plain
invocation of ``status``, ``domain list``, ``domain start`` or ``domain stop`` runs
without typer too (``_fast``); any other invocation imports typer and only the
module of the subcommand it names.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import typer

NAME = "kagemusha"
HELP = "kagemusha: high-availability cluster manager for application servers."


class Command(NamedTuple):
    """One subcommand of the root: where it lives and its one-line help."""

    module: str
    help: str


#: Subcommands in the order ``kagemusha --help`` lists them.
COMMANDS: dict[str, Command] = {
    "agent": Command("kagemusha.cli.agent", "Run the node's agent in the foreground; SIGTERM leaves the cluster gracefully."),
    "status": Command("kagemusha.cli.status",
                      "Show nodes, groups, resources and monitors (and, with --events N, the event log)."),
    "install-service": Command("kagemusha.cli.service", "Write the systemd unit that runs this node's agent "
                               "(default config path /etc/kagemusha/cluster.toml)."),
    "domain": Command("kagemusha.cli.domain", "Application-server domains (WebOTX otxadmin commands)."),
    "config": Command("kagemusha.cli.config",
                      "Cluster configuration (cluster.toml): validate, apply to the store, show, diff."),
    "group": Command("kagemusha.cli.group", "Failover groups: start, stop, move."),
    "node": Command("kagemusha.cli.node", "Nodes: standby (drain) and unstandby."),
    "monitor": Command("kagemusha.cli.monitor", "Monitors: suspend and resume."),
    "init": Command("kagemusha.cli.procedure",
                    "Write the plan for the seed's one-way or two-way standby cluster; change nothing on the machine."),
    "build": Command("kagemusha.cli.procedure",
                     "Carry out this node's part of the plan; each step says done or already done."),
    "uninstall": Command("kagemusha.cli.procedure",
                         "Undo this node's build (the seed's chapter 5): exactly what the manifest lists."),
    "install-compat": Command("kagemusha.cli.compat", "Write PREFIX/bin/otxadmin, a launcher that maps the seed's "
                              "otxadmin commands onto kagemusha domain."),
}


#: First words with commands on the fast path (``cli/_fast.py``): a plain invocation runs without typer.
FAST = frozenset({"status", "domain"})


def _root() -> typer.Typer:
    import typer

    root = typer.Typer(
        name=NAME,
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @root.callback()
    def _group() -> None:  # a group even when only one subcommand is attached
        pass

    return root


def attach(root: typer.Typer, name: str, only: str | None = None) -> None:
    """Import subcommand ``name``'s module and attach its command(s) to ``root``.

    With ``only``, a group ``name`` keeps just its command ``only`` (when it has one
    of that name): typer builds every parameter of every command it attaches (a
    pydantic adapter each), so a group of twenty commands costs tens of milliseconds
    more than the one command that runs.
    """
    import importlib

    module = importlib.import_module(COMMANDS[name].module)
    register = getattr(module, "register", None)
    if callable(register):
        register(root)
    else:
        root.add_typer(module.app, name=name)
    if only is not None:
        for info in root.registered_groups:
            if info.name == name and info.typer_instance is not None:
                info.typer_instance = _only(info.typer_instance, only)


def _command_name(info: Any) -> str | None:
    if info.name:
        return str(info.name)
    cb = info.callback
    return cb.__name__.lower().replace("_", "-") if cb is not None else None


def _only(group: typer.Typer, command: str) -> typer.Typer:
    """A copy of ``group`` with only its command or sub-group ``command``; ``group`` itself if it has none."""
    import copy

    cmds = [c for c in group.registered_commands if _command_name(c) == command]
    subs = [g for g in group.registered_groups if g.name == command]
    if not cmds and not subs:  # an option (--help) or an unknown command: typer needs the whole group
        return group
    new = copy.copy(group)
    new.registered_commands = cmds
    new.registered_groups = subs
    return new


def build_app(names: list[str] | None = None, only: str | None = None) -> typer.Typer:
    """The root typer app with the subcommands ``names`` attached (all of them by default).

    ``only``: with one name, that group's command to keep (see ``attach``).
    """
    root = _root()
    for name in COMMANDS if names is None else names:
        attach(root, name, only)
    return root


def root_help() -> str:
    """``kagemusha --help``, from the table (no subcommand imported)."""
    width = max(len(n) for n in COMMANDS)
    lines = [f"Usage: {NAME} [OPTIONS] COMMAND [ARGS]...", "", f"  {HELP}", "", "Options:",
             "  --help  Show this message and exit.", "", "Commands:"]
    lines += [f"  {n.ljust(width)}  {c.help}" for n, c in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the subcommand named by the first argument, importing only its module.

    Every failure is one line on stderr, never a traceback. Exit codes: 0 ok, 1 failed, 2 bad usage
    (unknown flag, missing or bad argument), 130 interrupted.
    """
    from kagemusha.errors import KagemushaError

    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] == "--help":
        sys.stdout.write(root_help())
        sys.exit(0 if args else 2)  # no arguments: help and exit 2, as click's no_args_is_help does
    if args[0] in FAST:
        from kagemusha.cli._fast import match

        fast = match(args)
        if fast is not None:  # a plain invocation of a hot command: no typer (see cli/_fast.py)
            try:
                fast()
            except KeyboardInterrupt:
                print(f"{NAME}: interrupted", file=sys.stderr)
                sys.exit(130)
            except KagemushaError as exc:
                print(f"{NAME}: {exc}", file=sys.stderr)
                sys.exit(1)
            sys.exit(0)
    if args[0] in COMMANDS:
        app: Any = build_app([args[0]], args[1] if len(args) > 1 else None)
    else:  # unknown: let typer say so
        app = build_app()
    from typer import Abort

    # NB: recent typer carries its own copy of click, whose exceptions are not click's.
    try:
        from typer._click import exceptions as cx
    except ImportError:  # typer on click itself
        import click.exceptions as cx  # type: ignore[no-redef]
    try:
        rc = app(args=args, prog_name=NAME, standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:  # e.g. `kagemusha config`: the group's help, as before
        print(exc.ctx.get_help() if exc.ctx else exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except cx.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else NAME
        print(f"{where}: {_one_line(exc.format_message())} (see {where} --help)", file=sys.stderr)
        sys.exit(2)
    except cx.ClickException as exc:
        print(f"{NAME}: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Abort:
        print(f"{NAME}: interrupted", file=sys.stderr)
        sys.exit(130)
    except KagemushaError as exc:  # expected failure: one line, no traceback
        print(f"{NAME}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole CLI as one typer app (documentation, tests); built on first use
        return build_app()
    raise AttributeError(name)
