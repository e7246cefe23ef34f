"""``kagemusha status``: the cluster at a glance (CLUSTERPRO's clpstat).

Through any agent's API when the cluster has an API token; when no agent answers,
it reads the store directly (and says so), so the status of a cluster whose agents
are all down can still be shown.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kagemusha.cli._common import config_path, err, fail, get_config, out, print_json, run

if TYPE_CHECKING:
    import typer

_STYLE = {"up": "green", "down": "red", "online": "green", "offline": "dim", "starting": "yellow",
          "stopping": "yellow", "failed": "bold red"}


def render(st: dict[str, Any]) -> None:
    from rich.table import Table

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


def render_events(events: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title="events", title_justify="left")
    for col in ("time", "node", "group", "event", "reason", "by"):
        t.add_column(col)
    for e in events:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e.get("at") or 0)))
        t.add_row(at, e.get("node") or "", e.get("group") or "", e.get("kind") or "", e.get("reason") or "",
                  e.get("by") or "")
    out.print(t)


def _read(config: str | None, events: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The status (and events) through the API when the cluster has a token, else from the store.

    With a token, the API is asked with only the config's client keys read (``client_config``):
    the full config (pydantic schema) is loaded only when the file is not plainly valid for
    them (it then names every error, exit 2) or when no agent answers (to read the store).
    """
    from kagemusha.cli._client import ApiClient, HttpError, client_config, uses_api
    from kagemusha.errors import ApiError

    light = client_config(config_path(config))
    api_cfg = light if light is not None else get_config(config, client=True)
    if uses_api(api_cfg):
        try:
            with ApiClient(api_cfg) as api:
                st = api.get("/cluster")
                evs = api.get(f"/events?limit={events}")["events"] if events else []
                return st, evs
        except HttpError as exc:
            fail(str(exc), 2 if exc.status in (400, 404, 422) else 1)
        except ApiError as exc:
            err.print(f"kagemusha: {exc}; reading the cluster store directly", markup=False)

    from kagemusha.control import ClusterControl

    cfg = get_config(config, client=True)

    async def go() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with ClusterControl.open(cfg) as ctl:
            return await ctl.status(), (await ctl.events(events) if events else [])

    return run(go)


def show(config: str | None, as_json: bool, events: int) -> None:
    """The body of ``kagemusha status`` (typer-free: the fast path in ``_fast`` calls it too)."""
    st, evs = _read(config, events)
    if as_json:
        print_json({**st, "events": evs} if events else st)
    else:
        render(st)
        if events:
            render_events(evs)


def register(root: typer.Typer) -> None:
    # NB: the typer declaration is made here, not at import: `kagemusha status` on the fast path
    # (cli/_fast.py) imports this module without typer. Its options are mirrored in _fast.COMMANDS
    # (tests/cli/test_fast.py checks that the two agree).
    import typer

    from kagemusha.cli._common import ConfigOpt, JsonOpt

    def status(
        config: str = ConfigOpt,
        as_json: bool = JsonOpt,
        events: int = typer.Option(0, "--events", "-e", min=0, max=500, help="also show the last N events"),
    ) -> None:
        """Show nodes, groups, resources and monitors (and, with --events N, the event log)."""
        show(config, as_json, events)

    root.command("status")(status)
