"""``kagemusha group start|stop|move`` (CLUSTERPRO's clpgrp). Each waits until done (``--wait 0``: do not wait).

Through any agent's API when the cluster has an API token, else on the store directly.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from kagemusha.cli._common import ConfigOpt, JsonOpt, WaitOpt, get_config, out, print_json

app = typer.Typer(help="Failover groups: start, stop, move.", no_args_is_help=True)

#: Extra seconds the HTTP request may take beyond the action's own wait.
SLACK = 15.0


def _show(g: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(g)
    else:
        where = f" on {g['node']}" if g.get("node") else ""
        out.print(f"group {g['name']}: {g['state']}{where}", markup=False)


def _post(path: str, body: dict[str, Any], wait: float) -> Any:
    return lambda api: api.post(path, body, timeout=wait + SLACK)


@app.command("start")
def start(
    group: str,
    node: str = typer.Option(None, "--node", "-n", help="start it on this node"),
    config: str = ConfigOpt,
    wait: float = WaitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start GROUP (on NODE, or its best node) and wait until it is online. Clears its fail counts."""
    from kagemusha.cli._client import through

    cfg = get_config(config, client=True)
    body: dict[str, Any] = {"wait": wait, **({"node": node} if node else {})}
    _show(through(cfg, _post(f"/groups/{quote(group, safe='')}/start", body, wait),
                  lambda ctl: ctl.start_group(group, node, wait=wait)), as_json)


@app.command("stop")
def stop(group: str, config: str = ConfigOpt, wait: float = WaitOpt, as_json: bool = JsonOpt) -> None:
    """Stop GROUP and wait until it is offline."""
    from kagemusha.cli._client import through

    cfg = get_config(config, client=True)
    _show(through(cfg, _post(f"/groups/{quote(group, safe='')}/stop", {"wait": wait}, wait),
                  lambda ctl: ctl.stop_group(group, wait=wait)), as_json)


@app.command("move")
def move(
    group: str,
    to: str = typer.Option(..., "--to", "-t", help="target node"),
    config: str = ConfigOpt,
    wait: float = WaitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Move GROUP to node TO and wait until it is online there."""
    from kagemusha.cli._client import through

    cfg = get_config(config, client=True)
    _show(through(cfg, _post(f"/groups/{quote(group, safe='')}/move", {"to": to, "wait": wait}, wait),
                  lambda ctl: ctl.move_group(group, to, wait=wait)), as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="group")
