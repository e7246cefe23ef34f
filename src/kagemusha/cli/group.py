"""``kagemusha group start|stop|move`` (CLUSTERPRO's clpgrp). Each waits until done."""

from __future__ import annotations

from typing import Any

import typer

from kagemusha.cli._common import ConfigOpt, WaitOpt, get_config, out, print_json, run

app = typer.Typer(help="Failover groups: start, stop, move.", no_args_is_help=True)


def _do(config: str | None, as_json: bool, fn: Any) -> None:
    from kagemusha.control import ClusterControl

    cfg = get_config(config)

    async def go() -> dict[str, Any]:
        async with ClusterControl.open(cfg) as ctl:
            result: dict[str, Any] = await fn(ctl)
            return result

    g = run(go)
    if as_json:
        print_json(g)
    else:
        where = f" on {g['node']}" if g.get("node") else ""
        out.print(f"group {g['name']}: {g['state']}{where}", markup=False)


@app.command("start")
def start(
    group: str,
    node: str = typer.Option(None, "--node", "-n", help="start it on this node"),
    config: str = ConfigOpt,
    wait: float = WaitOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Start GROUP (on NODE, or its best node) and wait until it is online. Clears its fail counts."""
    _do(config, as_json, lambda ctl: ctl.start_group(group, node, wait=wait))


@app.command("stop")
def stop(group: str, config: str = ConfigOpt, wait: float = WaitOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop GROUP and wait until it is offline."""
    _do(config, as_json, lambda ctl: ctl.stop_group(group, wait=wait))


@app.command("move")
def move(
    group: str,
    to: str = typer.Option(..., "--to", "-t", help="target node"),
    config: str = ConfigOpt,
    wait: float = WaitOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Move GROUP to node TO and wait until it is online there."""
    _do(config, as_json, lambda ctl: ctl.move_group(group, to, wait=wait))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="group")
