"""``kagemusha init``, ``build`` and ``uninstall``: the seed's chapters 2 and 5 as three commands.

``init one-way|two-way --out DIR`` writes a plan (cluster.toml, properties, scripts, PLAN.md);
``build --plan DIR --node N`` carries out that node's part, each step idempotent, with a
manifest of every change under the state directory; ``uninstall`` removes exactly that.
Exit codes: 0 done, 1 a step or a preflight check failed (one line each; nothing changed by a
failed preflight), 2 bad flags or plan.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from kagemusha.cli._common import err, out, print_json

DEFAULT_HOME = "/var/lib/kagemusha"
DEFAULT_ETC = "/etc/kagemusha"

_PlanOpt = typer.Option(..., "--plan", help="the plan directory written by `kagemusha init`")
_NodeOpt = typer.Option(None, "--node", "-n", help="this machine's node in the plan (default: $KAGEMUSHA_NODE)")
_StateOpt = typer.Option(None, "--state-dir", help=f"state directory: registry, manifest ($KAGEMUSHA_HOME or {DEFAULT_HOME})")
_EtcOpt = typer.Option(None, "--etc-dir", help=f"where the config is installed ($KAGEMUSHA_ETC or {DEFAULT_ETC})")
_OutOpt = typer.Option(..., "--out", help="the plan directory to write")
_UnitDirOpt = typer.Option(Path("/etc/systemd/system"), "--unit-dir", help="where the systemd unit goes")
_JsonOpt = typer.Option(False, "--json", help="one JSON object per step on stdout, for machines")
_DryOpt = typer.Option(False, "--dry-run", help="print the steps and whether each is done; change nothing")

_MARK = {"done": "[green]✓[/]", "already done": "[dim]=[/]", "would do": "[cyan]→[/]", "ok": "[green]✓[/]",
         "failed": "[red]✗[/]", "skipped": "[dim]-[/]"}


def _bad(lines: list[tuple[str, str]] | list[str], code: int) -> None:
    for line in lines:
        text = f"{line[0]}: {line[1]}" if isinstance(line, tuple) else line
        err.print(f"kagemusha: {text}", markup=False)
    raise typer.Exit(code)


class _Progress:
    """One line per finished step; on a terminal, a spinner names the step running meanwhile."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.status: Any = None

    def begin(self, title: str) -> None:
        if self.as_json or not out.file.isatty():
            return
        from rich.markup import escape

        self.status = out.console.status(f"{escape(title)} …")
        self.status.start()

    def emit(self, o: Any) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
        _emitter(self.as_json)(o)


def _emitter(as_json: bool) -> Any:
    import json

    def emit(o: Any) -> None:
        if as_json:
            sys.stdout.write(json.dumps(o.as_dict()) + "\n")
            sys.stdout.flush()
            return
        from rich.markup import escape

        detail = f" [dim]— {escape(o.detail)}[/]" if o.detail else ""
        out.print(f"{_MARK.get(o.status, '?')} {escape(o.title)}: [bold]{o.status}[/]{detail}")

    return emit


def init(
    topology: str = typer.Argument(..., help="one-way or two-way (the seed's 2.5 / 2.6)", show_default=False),
    out_dir: Path = _OutOpt,
    nodes: str = typer.Option(..., "--nodes", help="NAME=ADDR[:PORT],... the nodes' API addresses (first: the seed's N1)"),
    vip: str = typer.Option(..., "--vip", help="ADDR/PREFIX (two, comma-separated, for two-way)"),
    interface: str = typer.Option(..., "--interface", help="the interface that carries the VIPs"),
    disk: str = typer.Option(..., "--disk", help="switchover disk device (two for two-way)"),
    mount: str = typer.Option(..., "--mount", help="its mount point, e.g. /data1 (two for two-way)"),
    store: str = typer.Option(..., "--store", help="local:PATH or etcd://HOST:PORT,..."),
    admin_password_file: str = typer.Option(..., "--admin-password-file", help="file (0600) with the admin password"),
    fstype: str = typer.Option("ext4", "--fstype"),
    domain: str = typer.Option(None, "--domain", help="domain name(s) (default domain1[,domain2])"),
    app: str = typer.Option(None, "--app", help="MODULE:ATTR the domains serve (default the bundled hello app)"),
    cluster: str = typer.Option(None, "--cluster", help="cluster name (default webotx-oneway / webotx-twoway)"),
    admin_port: int = typer.Option(6202, "--admin-port", help="the admin domain's port"),
    state_dir: str = typer.Option(DEFAULT_HOME, "--state-dir", help="cluster.state_dir: the agents' state"),
    fsck: str = typer.Option("every 10", "--fsck", help='disk resources: "always", "never" or "every N"'),
    kagemusha_cmd: str = typer.Option(None, "--kagemusha", help="the command the scripts run (default: this one)"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty directory"),
) -> None:
    """Write the plan for the seed's one-way or two-way standby cluster; change nothing on the machine."""
    from kagemusha.errors import ConfigError
    from kagemusha.procedure import parse_facts, render_plan, write_plan

    if kagemusha_cmd is None:
        beside = Path(sys.executable).parent / "kagemusha"
        kagemusha_cmd = str(beside) if beside.exists() else "kagemusha"
    try:
        facts = parse_facts(
            topology, nodes=nodes, vip=vip, interface=interface, disk=disk, mount=mount, store=store,
            admin_password_file=admin_password_file, fstype=fstype, domain=domain, app=app, cluster=cluster,
            admin_port=admin_port, state_dir=state_dir, fsck=fsck, kagemusha=kagemusha_cmd,
        )
        files = render_plan(facts)
        write_plan(files, out_dir, force=force)
    except ConfigError as exc:
        _bad(list(exc.errors), 2)
    out.print(f"plan for the {facts.topology} cluster {facts.cluster} written to {out_dir.absolute()}:", markup=False)
    for rel in sorted(files):
        out.print(f"  {rel}", markup=False)
    err.print(f"next: review {out_dir / 'PLAN.md'}, then on each node (first {facts.nodes[0][0]}): "
              f"kagemusha build --plan {out_dir} --node NODE", markup=False)


def _context(plan_dir: Path, node: str | None, state_dir: str | None, etc_dir: str | None, *,
             service: str = "none", unit_dir: Path = Path("/etc/systemd/system"), mkfs: bool = False) -> Any:
    from kagemusha.errors import ConfigError
    from kagemusha.procedure import BuildContext, Manifest, load_plan

    try:
        plan = load_plan(plan_dir)
    except ConfigError as exc:
        _bad(list(exc.errors), 2)
    node = node or os.environ.get("KAGEMUSHA_NODE") or ""
    if node not in plan.facts.node_names:
        _bad([("--node", f'"{node}" is not a node of the plan ({", ".join(plan.facts.node_names)})' if node
               else f"say which node this machine is ({', '.join(plan.facts.node_names)})")], 2)
    if service not in ("systemd", "none"):
        _bad([("--service", f'must be "systemd" or "none", got "{service}"')], 2)
    env: dict[str, str] = {}
    if state_dir:
        os.environ["KAGEMUSHA_HOME"] = state_dir
    home = Path(os.environ.get("KAGEMUSHA_HOME") or DEFAULT_HOME).absolute()
    if os.environ.get("KAGEMUSHA_HOME"):
        env["KAGEMUSHA_HOME"] = str(home)
    if os.environ.get("KAGEMUSHA_DOMAIN_REGISTRY"):
        env["KAGEMUSHA_DOMAIN_REGISTRY"] = os.environ["KAGEMUSHA_DOMAIN_REGISTRY"]
    etc = Path(etc_dir or os.environ.get("KAGEMUSHA_ETC") or DEFAULT_ETC).absolute()
    env["KAGEMUSHA_CONFIG"] = str(etc / "cluster.toml")
    env["KAGEMUSHA_NODE"] = node
    return BuildContext(plan=plan, node=node, home=home, etc=etc,
                        manifest=Manifest.open(home, plan.facts.cluster, node), service=service,
                        unit_dir=unit_dir, mkfs=mkfs, env=env)


def _finish(results: list[Any], as_json: bool) -> None:
    failed = [o for o in results if o.status == "failed"]
    if failed:
        raise typer.Exit(1)


def build(
    plan: Path = _PlanOpt,
    node: str = _NodeOpt,
    service: str = typer.Option("systemd", "--service", help="systemd (write and enable the unit) or none"),
    mkfs: bool = typer.Option(False, "--mkfs", help="make the file system on a disk that has none (first node)"),
    verify: bool = typer.Option(False, "--verify", help="after the build, run the seed's checks (move groups)"),
    dry_run: bool = _DryOpt,
    as_json: bool = _JsonOpt,
    state_dir: str = _StateOpt,
    etc_dir: str = _EtcOpt,
    unit_dir: Path = _UnitDirOpt,
) -> None:
    """Carry out this node's part of the plan; each step says done or already done."""
    from kagemusha.errors import ConfigError, KagemushaError
    from kagemusha.procedure import PreflightFailed, run_build, run_verify

    ctx = _context(plan, node, state_dir, etc_dir, service=service, unit_dir=unit_dir, mkfs=mkfs)
    progress = _Progress(as_json)
    emit = progress.emit
    try:
        results = run_build(ctx, dry_run=dry_run, emit=emit, begin=progress.begin)
    except PreflightFailed as exc:
        if as_json:
            print_json({"preflight": "failed", "problems": exc.problems})
        _bad(exc.problems, 1)
    except ConfigError as exc:
        _bad(list(exc.errors), 2)
    except KagemushaError as exc:
        _bad([str(exc)], 1)
    if service == "none" and not dry_run and not as_json:
        import shlex

        err.print(f"agent (--service none): {shlex.join(ctx.agent_argv())}", markup=False)
    if verify and not dry_run:
        results = run_verify(ctx, emit=emit)
    _finish(results, as_json)


def uninstall(
    plan: Path = _PlanOpt,
    node: str = _NodeOpt,
    all_groups: bool = typer.Option(False, "--all", help="stop every group instead of moving this node's away"),
    last: bool = typer.Option(False, "--last", help="act as the last node although other nodes are still marked "
                                                    "built (they are gone for good): delete the domains and keys"),
    service: str = typer.Option(None, "--service", help="what build installed (default: as the manifest says)"),
    dry_run: bool = _DryOpt,
    as_json: bool = _JsonOpt,
    state_dir: str = _StateOpt,
    etc_dir: str = _EtcOpt,
    unit_dir: Path = _UnitDirOpt,
) -> None:
    """Undo this node's build (the seed's chapter 5): exactly what the manifest lists."""
    from kagemusha.errors import KagemushaError
    from kagemusha.procedure import run_uninstall

    ctx = _context(plan, node, state_dir, etc_dir, service=service or "none", unit_dir=unit_dir)
    if service is None:
        ctx.service = str(ctx.manifest.data.get("service", "systemd"))
    try:
        progress = _Progress(as_json)
        results = run_uninstall(ctx, all_groups=all_groups, dry_run=dry_run, last=last, emit=progress.emit,
                                begin=progress.begin)
    except KagemushaError as exc:
        _bad([str(exc)], 1)
    _finish(results, as_json)


def register(root: typer.Typer) -> None:
    root.command("init")(init)
    root.command("build")(build)
    root.command("uninstall")(uninstall)
