"""``kagemusha status``: the cluster at a glance (CLUSTERPRO's clpstat)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from kagemusha.cli._common import ConfigOpt, JsonOpt, get_config, out, print_json, run

_STYLE = {"up": "green", "down": "red", "online": "green", "offline": "dim", "starting": "yellow",
          "stopping": "yellow", "failed": "bold red"}


def render(st: dict[str, Any]) -> None:
    t = Table(title=f"cluster {st['cluster']}", title_justify="left")
    t.add_column("node")
    t.add_column("state")
    for n in st["nodes"]:
        state = n["state"] + (" (standby)" if n.get("standby") else "")
        t.add_row(n["name"], f"[{_STYLE.get(n['state'], '')}]{state}[/]")
    out.print(t)
    g = Table(title="groups", title_justify="left")
    for col in ("group", "state", "node", "resources", "monitors", "reason"):
        g.add_column(col)
    for grp in st["groups"]:
        res = ", ".join(f"{r['name']}={r['state']}" for r in grp["resources"])
        mons = ", ".join(
            f"{m['name']}={'suspended' if m['suspended'] else (m['last'] or '-')}"
            + (f"({m['fail_count']})" if m["fail_count"] else "")
            for m in grp["monitors"]
        )
        g.add_row(grp["name"], f"[{_STYLE.get(grp['state'], '')}]{grp['state']}[/]", grp["node"] or "-",
                  res or "-", mons or "-", grp.get("reason") or "")
    out.print(g)


def status(config: str = ConfigOpt, as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Show nodes, groups, resources and monitors."""
    from kagemusha.control import ClusterControl

    cfg = get_config(config)

    async def go() -> dict[str, Any]:
        async with ClusterControl.open(cfg) as ctl:
            return await ctl.status()

    st = run(go)
    if as_json:
        print_json(st)
    else:
        render(st)


def register(root: typer.Typer) -> None:
    root.command("status")(status)
    _ = JsonOpt
