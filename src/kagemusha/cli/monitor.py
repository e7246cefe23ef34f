"""``kagemusha monitor suspend|resume GROUP MONITOR`` (CLUSTERPRO's clpmonctrl -s / -r)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from kagemusha.cli._common import ConfigOpt, JsonOpt, get_config, out, print_json

app = typer.Typer(help="Monitors: suspend and resume.", no_args_is_help=True)


def _set(group: str, monitor: str, on: bool, config: str | None, as_json: bool) -> None:
    from kagemusha.cli._client import through
    from kagemusha.control import ClusterControl

    cfg = get_config(config, client=True)
    verb = "suspend" if on else "resume"

    async def via_store(ctl: ClusterControl) -> dict[str, Any]:
        await ctl.suspend_monitor(group, monitor, on)
        st = await ctl.status()
        return dict(next(g for g in st["groups"] if g["name"] == group))

    g: dict[str, Any] = through(
        cfg, lambda api: api.post(f"/groups/{quote(group, safe='')}/monitors/{quote(monitor, safe='')}/{verb}"), via_store
    )
    if as_json:
        print_json(g)
    else:
        out.print(f"monitor {monitor} of group {group}: {'suspended' if on else 'resumed'}", markup=False)


@app.command("suspend")
def suspend(group: str, monitor: str, config: str = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Suspend MONITOR of GROUP: it stops checking (and recovering) until resumed."""
    _set(group, monitor, True, config, as_json)


@app.command("resume")
def resume(group: str, monitor: str, config: str = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Resume MONITOR of GROUP."""
    _set(group, monitor, False, config, as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="monitor")
