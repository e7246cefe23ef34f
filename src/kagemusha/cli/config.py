"""``kagemusha config validate|apply|show|diff``."""

from __future__ import annotations

import getpass
import socket
import time
from typing import Any

import typer

from kagemusha.cli._common import err, fail, get_config, out, print_config_errors, print_json, run
from kagemusha.config import load_config
from kagemusha.errors import ConfigError

app = typer.Typer(help="Cluster configuration (cluster.toml): validate, apply to the store, show, diff.", no_args_is_help=True)


@app.command("validate")
def validate(path: str = typer.Argument(..., help="cluster.toml to check")) -> None:
    """Check a config file; print every error with file, key path and what is expected. Exit 0 ok, 2 bad."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print_config_errors(exc)
        err.print(f"{path}: {len(exc.errors)} error(s)", markup=False)
        raise typer.Exit(2) from None
    from kagemusha.config import config_warnings

    for loc, msg in config_warnings(cfg):
        err.print(f"{path}: {loc}: warning: {msg}", markup=False)
    out.print(
        f"{path}: ok (cluster {cfg.cluster.name}: {len(cfg.nodes)} nodes, {len(cfg.groups)} groups)", markup=False
    )


def _store(path: str) -> Any:
    from pathlib import Path

    from kagemusha.store import open_cluster_store

    cfg = get_config(path)
    try:
        return cfg, open_cluster_store(cfg.cluster, base_dir=str(Path(path).resolve().parent),
                                       timeout=max(cfg.cluster.store_timeout, 2.0))
    except ConfigError as exc:
        print_config_errors(exc)
        raise typer.Exit(2) from None


@app.command("apply")
def apply(
    path: str = typer.Argument(None, help="cluster.toml to validate and store (default: --config)"),
    config: str = typer.Option(None, "--config", "-c", help="same as PATH"),
) -> None:
    """Validate the file, then store it as the next config version; running agents apply the difference."""
    from kagemusha.cli._common import config_path
    from kagemusha.control import apply_config

    path = path or config_path(config)
    _cfg, store = _store(path)  # exits 2 on an invalid file: nothing stored

    async def go() -> Any:
        async with store:
            return await apply_config(store, path, by=f"cli {getpass.getuser()}@{socket.gethostname()}")

    rec, summary = run(go)
    for line in summary:
        out.print(f"  {line}", markup=False)
    out.print(f"config version {rec.version} applied ({rec.sha256[:12]})", markup=False)


@app.command("show")
def show(
    path: str = typer.Option(None, "--config", "-c", help="cluster.toml naming the store"),
    toml: bool = typer.Option(False, "--toml", help="print the stored TOML text"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the applied config version (and its text with --toml)."""
    from kagemusha.cli._common import config_path
    from kagemusha.control import read_stored_config

    cfg, store = _store(config_path(path))

    async def go() -> Any:
        async with store:
            return await read_stored_config(store, cfg.cluster.name)

    rec = run(go)
    if rec is None:
        fail(f"no config applied to cluster {cfg.cluster.name} yet (kagemusha config apply FILE)")
    if as_json:
        print_json({"version": rec.version, "sha256": rec.sha256, "applied_at": rec.applied_at, "by": rec.by,
                    **({"toml": rec.toml} if toml else {})})
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.applied_at))
    out.print(f"cluster {cfg.cluster.name}: config version {rec.version} ({rec.sha256[:12]}) applied {when} by {rec.by}",
              markup=False)
    if toml:
        print(rec.toml, end="")


@app.command("diff")
def diff(
    path: str = typer.Argument(None, help="cluster.toml to compare with the applied version (default: --config)"),
    config: str = typer.Option(None, "--config", "-c", help="same as PATH"),
) -> None:
    """Show what `config apply FILE` would change. Exit 0 when nothing would change, 1 when something would."""
    from kagemusha.cli._common import config_path
    from kagemusha.config._stored import load_text, text_diff
    from kagemusha.control import changes_from, read_stored_config

    path = path or config_path(config)
    cfg, store = _store(path)

    async def go() -> Any:
        async with store:
            return await read_stored_config(store, cfg.cluster.name)

    rec = run(go)
    _, text = load_text(path)
    summary = changes_from(rec, cfg, path) if (rec is None or rec.toml != text) else ["no change"]
    for line in summary:
        out.print(line, markup=False)
    if rec is not None and rec.toml != text:
        print(text_diff(rec.toml, text, f"applied v{rec.version}", path), end="")
    raise typer.Exit(0 if summary == ["no change"] else 1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="config")
