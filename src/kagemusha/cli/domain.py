"""``kagemusha domain ...``: the seed's ``otxadmin`` domain commands.

The seed's verbs are accepted too (``create-domain``, ``delete-domain``, ``start-domain``,
``stop-domain``, ``list-domains``), with the seed's flags (``--wait_timeout``, ``--file=...``,
``--domaindir=...``), so a seed script runs with ``/opt/WebOTX/bin/otxadmin`` replaced by
``kagemusha domain`` and nothing else changed. Exit 0 on success, 1 on failure (one line why),
2 on bad usage.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.exceptions import TyperException

from kagemusha.cli._domain_run import failure_lines, print_failure

app = typer.Typer(
    help="Application-server domains (WebOTX otxadmin commands).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

DomainDir = Annotated[
    Path | None, typer.Option("--domaindir", help="Domains root (default: where the node registry says).")
]
Name = Annotated[
    str, typer.Argument(help="Domain name (admin: the node's admin domain).", show_default=False)
]


def _fail(message: str) -> None:
    print(f"kagemusha: {message}", file=sys.stderr)


def _handled(fn: F) -> F:
    """Failures become one line on stderr and exit 1; never a traceback (see ``_domain_run.failure_lines``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Exception as exc:
            lines = failure_lines(exc)
            if lines is None:
                raise
            print_failure(lines)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _command(name: str, alias: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    def register(fn: F) -> F:
        handled = _handled(fn)
        app.command(name, **kwargs)(handled)
        if alias:
            app.command(alias, hidden=True, **kwargs)(handled)
        return fn

    return register


@_command("create", "create-domain")
def create(
    name: Name,
    file: Annotated[
        Path, typer.Option("--file", "-f", help="The domain's properties file (domain1.properties).")
    ],
    domaindir: DomainDir = None,
    user: Annotated[str | None, typer.Option("--user", help="Admin domain user.")] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", envvar="KAGEMUSHA_ADMIN_PASSWORD", help="Admin domain password."),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Admin domain port (6202).")
    ] = None,
) -> None:
    """Create a domain from a properties file (otxadmin create-domain)."""
    from kagemusha.domains import create_domain

    layout, warnings = create_domain(
        name, file, domaindir=domaindir, admin_user=user, admin_password=password, admin_port=port
    )
    for w in warnings:
        print(f"kagemusha: warning: {w}", file=sys.stderr)
    print(f"Domain {name} created in {layout.dir}.")


@_command("delete", "delete-domain")
def delete(
    name: Name,
    domaindir: DomainDir = None,
    user: Annotated[str | None, typer.Option("--user")] = None,
    password: Annotated[str | None, typer.Option("--password", envvar="KAGEMUSHA_ADMIN_PASSWORD")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535)] = None,
) -> None:
    """Delete a stopped domain and its directory (otxadmin delete-domain)."""
    from kagemusha.domains import delete_domain

    warnings = delete_domain(name, domaindir, admin_user=user, admin_password=password)
    for w in warnings:
        print(f"kagemusha: warning: {w}", file=sys.stderr)
    print(f"Domain {name} {'removed from the registry' if warnings else 'deleted'}.")


@_command("start", "start-domain")
def start(
    name: Name,
    domaindir: DomainDir = None,
    adminonly: Annotated[
        bool, typer.Option("--adminonly", help="With admin: start the admin domain alone.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for readiness.")
    ] = 120.0,
) -> None:
    """Start a domain; returns once its application answers (otxadmin start-domain)."""
    from kagemusha.cli import _domain_run

    if adminonly and name != "admin":
        raise typer.BadParameter("--adminonly applies to the admin domain only")
    _domain_run.start(name, domaindir, adminonly=adminonly, timeout=timeout)


@_command("stop", "stop-domain")
def stop(
    name: Name,
    domaindir: DomainDir = None,
    force: Annotated[
        bool, typer.Option("--force", help="Kill every process of the domain after --wait_timeout seconds.")
    ] = False,
    wait_timeout: Annotated[
        float,
        typer.Option(
            "--wait_timeout",
            "--wait-timeout",
            min=0,
            help="Seconds of graceful stop (0 with --force: kill at once).",
        ),
    ] = 300.0,
) -> None:
    """Stop a domain gracefully; with --force kill it after --wait_timeout (otxadmin stop-domain)."""
    from kagemusha.cli import _domain_run

    _domain_run.stop(name, domaindir, force=force, wait_timeout=wait_timeout)


@_command("list", "list-domains")
def list_(domaindir: DomainDir = None) -> None:
    """List the domains and their states (otxadmin list-domains)."""
    from kagemusha.cli import _domain_run

    _domain_run.list_domains(domaindir)


@_command("kill")
def kill(name: Name, domaindir: DomainDir = None) -> None:
    """Kill every process of a domain at once, without a graceful stop (fencing)."""
    from kagemusha.domains import kill_domain

    pids = kill_domain(name, domaindir)
    print(f"Domain {name} killed ({len(pids)} processes).")


@_command("setup")
def setup(
    domains_root: Annotated[
        Path, typer.Option("--domains-root", "--domaindir", help="A domains root (on the switchover disk).")
    ],
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Admin domain port.")] = None,
    remove: Annotated[
        bool, typer.Option("--remove", help="Undo: forget the root and its domains on this node.")
    ] = False,
) -> None:
    """Register a domains root created on another node (the seed's setup.env step); --remove undoes it."""
    if remove:
        from kagemusha.domains import remove_domains_root

        if port is not None:
            raise typer.BadParameter("--port does not go with --remove", param_hint="--port")
        names = remove_domains_root(domains_root)
        print(f"Domains root {domains_root.absolute()} removed: {', '.join(names) or 'no domains'}.")
        return
    from kagemusha.domains import setup_domains_root

    names = setup_domains_root(domains_root, admin_port=port)
    print(f"Domains root {domains_root.absolute()} registered: {', '.join(names) or 'no domains'}.")


@_command("set")
def set_(
    name: Name,
    assignments: Annotated[
        list[str],
        typer.Argument(
            help="KEY=VALUE pairs (KEY= removes the key).", show_default=False, metavar="KEY=VALUE..."
        ),
    ],
    domaindir: DomainDir = None,
) -> None:
    """Change properties of a stopped domain, validated like create (otxadmin set)."""
    from kagemusha.domains import set_properties

    pairs: list[tuple[str, str | None]] = []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="KEY=VALUE")
        pairs.append((key.strip(), value if value != "" else None))
    changed = set_properties(name, pairs, domaindir)
    print(f"Domain {name}: {', '.join(changed)} set.")


@_command("deploy")
def deploy(
    name: Name,
    import_string: Annotated[
        str, typer.Argument(help="ASGI or WSGI app, 'module:attribute'.", show_default=False)
    ],
    domaindir: DomainDir = None,
    path: Annotated[
        Path | None, typer.Option("--path", help="Directory with the app's code, copied into the domain.")
    ] = None,
) -> None:
    """Deploy an ASGI or WSGI application to a domain (served from its next start)."""
    from kagemusha.domains import deploy_app

    running = deploy_app(name, import_string, domaindir, path=path)
    print(
        f"Application {import_string} deployed to {name}{'; restart the domain to serve it' if running else ''}."
    )


@_command("autostart")
def autostart(
    name: Name,
    enable: Annotated[
        bool, typer.Option("--enable/--disable", help="Whether the admin domain starts this domain.")
    ] = True,
    domaindir: DomainDir = None,
) -> None:
    """Turn a domain's autostart (by the admin domain) on or off; off for cluster-owned domains."""
    from kagemusha.domains import set_autostart

    set_autostart(name, enable, domaindir)
    print(f"Autostart of {name} {'enabled' if enable else 'disabled'}.")


@_command("health")
def health(
    name: Name,
    domaindir: DomainDir = None,
    user: Annotated[str, typer.Option("--user")] = "admin",
    password: Annotated[str, typer.Option("--password", envvar="KAGEMUSHA_DOMAIN_PASSWORD")] = "",
) -> None:
    """Check that a domain serves: admin API (with credentials) and application (exit 1 if not)."""
    from kagemusha.domains import check_domain_health

    h = check_domain_health(name, domaindir, user=user, password=password)
    if not h.ok:
        _fail(f"domain {name} is unhealthy: {h.detail}")
        raise typer.Exit(1)
    print(f"Domain {name} is healthy.")


# -- test-datasource (issue 13 item 3): the console's "test data source" (the seed's 4.1 step 7);
# psycopg is imported only when the command runs.


@_command("test-datasource")
def test_datasource(
    name: Name,
    datasource: Annotated[
        str, typer.Argument(help="Data source name (datasource.<NAME>.url).", show_default=False)
    ],
    domaindir: DomainDir = None,
) -> None:
    """Connect to a data source with the domain's settings: 'ok: HOST:PORT primary|standby PostgreSQL V'."""
    from kagemusha.domains._datasource import check_password_files, parse_datasources, probe_datasource
    from kagemusha.domains._layout import NodeRegistry
    from kagemusha.domains._properties import load_properties
    from kagemusha.errors import DomainError

    layout = NodeRegistry.from_env().locate(name, domaindir)
    props = load_properties(layout.properties)
    sources = parse_datasources(props.raw, source=str(layout.properties))
    ds = sources.get(datasource)
    if ds is None:
        known = ", ".join(sorted(sources)) or "none"
        raise DomainError(
            f"domain {name} has no data source {datasource!r} (datasource.{datasource}.url is not set in"
            f" {layout.properties}; data sources: {known})"
        )
    check_password_files({datasource: ds}, source=str(layout.properties))
    print(f"ok: {probe_datasource(ds)}")
