"""``kagemusha install-service``: write the systemd unit that runs this node's agent.

The unit runs ``kagemusha agent`` (its supervisor, which runs the agent and
fences the node if the agent dies). ``KillMode=mixed``: on ``systemctl stop``
only the main process gets SIGTERM, so the agent can stop its groups in order
with their stop scripts; whatever is left when it exits (or after
``TimeoutStopSec``, which covers the slowest group's stop timeouts) gets
SIGKILL. Logs go to stdout, which systemd hands to journald.

With ``cluster.watchdog`` (a kernel watchdog device, e.g. ``/dev/watchdog``) the
unit checks the device exists before starting the agent, and runs no
systemd watchdog of its own: the agent pings the device while it runs groups.
NB: systemd's ``RuntimeWatchdogSec=`` (system.conf) opens ``/dev/watchdog``
too, and a watchdog device has one opener; use another device for kagemusha.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path

import typer

from kagemusha._unit import render_unit
from kagemusha.cli._common import DEFAULT_CONFIG, ConfigOpt, config_path, err, fail, get_config, out
from kagemusha.config import Config

__all__ = ["render_unit"]

def _default_node(config: Config) -> str:
    env = os.environ.get("KAGEMUSHA_NODE")
    if env:
        return env
    host = socket.gethostname().split(".")[0]
    return host if host in config.node_names else ""


_NodeOpt = typer.Option(None, "--node", "-n", help="this machine's node (default: $KAGEMUSHA_NODE or the host name)")
_UnitDirOpt = typer.Option(Path("/etc/systemd/system"), "--unit-dir", help="where to write the unit")
_NameOpt = typer.Option("kagemusha", "--name", help="unit name (kagemusha.service)")
_StdoutOpt = typer.Option(False, "--stdout", help="print the unit instead of writing it")


def install_service(
    config: str = ConfigOpt,
    node: str = _NodeOpt,
    unit_dir: Path = _UnitDirOpt,
    name: str = _NameOpt,
    stdout: bool = _StdoutOpt,
) -> None:
    """Write the systemd unit that runs this node's agent (default config path /etc/kagemusha/cluster.toml)."""
    cfg = get_config(config)
    path = str(Path(config_path(config)).resolve()) if config or os.environ.get("KAGEMUSHA_CONFIG") else DEFAULT_CONFIG
    node = node or _default_node(cfg)
    if node not in cfg.node_names:
        fail(f'--node: "{node}" is not a node of {cfg.source} (nodes: {", ".join(cfg.node_names)})'
             if node else f"--node: say which node this machine is ({', '.join(cfg.node_names)})", 2)
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
        fail(f'--name: "{name}" is not a valid unit name', 2)
    text = render_unit(cfg, node=node, config_file=path)
    if stdout:
        sys.stdout.write(text)
        return
    target = unit_dir / f"{name}.service"
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".service.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(target)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror}")
    out.print(f"wrote {target}", markup=False)
    if cfg.cluster.watchdog:
        out.print(f"watchdog: the agent arms {cfg.cluster.watchdog} while it runs groups", markup=False)
    err.print(f"next: systemctl daemon-reload && systemctl enable --now {name}", markup=False)


def register(root: typer.Typer) -> None:
    root.command("install-service")(install_service)
