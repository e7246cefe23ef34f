"""``kagemusha config validate``."""

from __future__ import annotations

import typer

from kagemusha.cli._common import err, out, print_config_errors
from kagemusha.config import load_config
from kagemusha.errors import ConfigError

app = typer.Typer(help="Cluster configuration (cluster.toml).", no_args_is_help=True)


@app.command("validate")
def validate(path: str = typer.Argument(..., help="cluster.toml to check")) -> None:
    """Check a config file; print every error with file, key path and what is expected. Exit 0 ok, 2 bad."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print_config_errors(exc)
        err.print(f"{path}: {len(exc.errors)} error(s)", markup=False)
        raise typer.Exit(2) from None
    out.print(
        f"{path}: ok (cluster {cfg.cluster.name}: {len(cfg.nodes)} nodes, {len(cfg.groups)} groups)", markup=False
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="config")
