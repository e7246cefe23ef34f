"""``kagemusha domain test-datasource DOMAIN NAME``: the console's "test data source" (the seed's 4.1 step 7).

Registered on the ``domain`` command group by ``cli/domain.py`` (its last lines call
:func:`register`); psycopg is imported only when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kagemusha.cli.domain import DomainDir, Name, _command


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


def register(app: typer.Typer) -> None:
    _command("test-datasource")(test_datasource)


__all__ = ["register", "test_datasource"]
