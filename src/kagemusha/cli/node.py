"""``kagemusha node standby|unstandby NODE``: drain a node (its groups move away, it takes none) and undo it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from kagemusha.cli._common import ConfigOpt, JsonOpt, WaitOpt, get_config, out, print_json

app = typer.Typer(help="Nodes: standby (drain) and unstandby.", no_args_is_help=True)
SLACK = 15.0


def _set(node: str, on: bool, config: str | None, wait: float, as_json: bool) -> None:
    from kagemusha.cli._client import through

    cfg = get_config(config, client=True)
    verb = "standby" if on else "unstandby"
    st: dict[str, Any] = through(
        cfg,
        lambda api: api.post(f"/nodes/{quote(node, safe='')}/{verb}", {"wait": wait}, timeout=wait + SLACK),
        lambda ctl: ctl.set_standby(node, on, wait=wait),
    )
    if as_json:
        print_json(st)
        return
    runs = [g["name"] for g in st["groups"] if g["node"] == node]
    state = "standby" if on else "active"
    out.print(f"node {node}: {state}" + (f", runs {', '.join(runs)}" if runs else ", runs no group"), markup=False)


@app.command("standby")
def standby(node: str, config: str = ConfigOpt, wait: float = WaitOpt, as_json: bool = JsonOpt) -> None:
    """Put NODE in standby: its groups move to other nodes and it takes no new ones. Waits until it runs none."""
    _set(node, True, config, wait, as_json)


@app.command("unstandby")
def unstandby(node: str, config: str = ConfigOpt, wait: float = WaitOpt, as_json: bool = JsonOpt) -> None:
    """Let NODE take groups again (groups come back only where their failback is auto)."""
    _set(node, False, config, wait, as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="node")
