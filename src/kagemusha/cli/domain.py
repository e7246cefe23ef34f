"""``kagemusha domain ...``: placeholder until the domains part lands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Application-server domains (WebOTX otxadmin commands).", no_args_is_help=True)
