"""``kagemusha install-service``: write the systemd unit that runs this node's agent.

The unit runs ``kagemusha agent`` with ``Type=notify`` (the agent says READY
once it runs, and, with ``cluster.watchdog`` set, pings systemd's watchdog from
its decision loop). ``KillMode=mixed``: on ``systemctl stop`` only the agent
gets SIGTERM, so it can stop its groups in order with their stop scripts;
whatever is left when it exits (or after ``TimeoutStopSec``) gets SIGKILL.
Logs go to stdout, which systemd hands to journald.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
from pathlib import Path

import typer

from kagemusha.cli._common import DEFAULT_CONFIG, ConfigOpt, config_path, err, fail, get_config, out
from kagemusha.config import Config

__all__ = ["render_unit", "watchdog_seconds"]

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m)?\s*$")


def watchdog_seconds(config: Config) -> float | None:
    """``WatchdogSec`` from ``cluster.watchdog``: ``"systemd"`` (derived from the lease TTL) or a span (``10s``).

    Raises:
        ValueError: any other value (the message says what is expected).
    """
    value = config.cluster.watchdog
    if value is None or value.strip().lower() in ("", "none", "off"):
        return None
    if value.strip().lower() == "systemd":
        # Several decision cycles (each <= heartbeat_interval) fit in it, and it is short enough that a hung
        # agent is killed (and restarted, fencing what it left) soon after its lease has run out.
        return float(max(2, math.ceil(2 * config.cluster.heartbeat_timeout)))
    m = _SPAN.match(value)
    if not m:
        raise ValueError(f'cluster.watchdog: expected "systemd" or a time span such as "5s" or "500ms", got "{value}"')
    n = float(m.group(1))
    unit = m.group(2) or "s"
    secs = n / 1000 if unit == "ms" else n * 60 if unit in ("min", "m") else n
    if secs < 1:
        raise ValueError(f"cluster.watchdog: {value} is too short for systemd's watchdog (at least 1s)")
    return secs


def stop_budget(config: Config) -> int:
    """``TimeoutStopSec``: groups stop in parallel, each resource in turn within its ``stop_timeout``."""
    from kagemusha.resources import driver_class

    worst = 0.0
    for g in config.groups:
        total = 0.0
        for r in g.resources:
            if r.stop_timeout is not None:
                total += r.stop_timeout
            else:
                try:
                    total += driver_class(r.type).default_stop_timeout
                except Exception:  # an unknown type was reported by config validation; be generous
                    total += 60.0
        worst = max(worst, total)
    return max(90, math.ceil(worst + 30))


def _quote(arg: str) -> str:
    """One ExecStart= argument: systemd specifiers (%) and variables ($) escaped, quoted if needed."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def render_unit(config: Config, *, node: str, config_file: str, python: str = sys.executable) -> str:
    """The text of ``kagemusha.service`` for ``node``.

    Raises:
        ValueError: ``cluster.watchdog`` has a value systemd cannot take.
    """
    wd = watchdog_seconds(config)
    cmd = " ".join(_quote(a) for a in (python, "-m", "kagemusha", "agent", "--config", config_file, "--node", node))
    lines = [
        "# Written by `kagemusha install-service`. Local changes: `systemctl edit kagemusha`.",
        "[Unit]",
        f"Description=kagemusha cluster agent (cluster {config.cluster.name}, node {node})",
        "After=network-online.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={cmd}",
        f"Environment={_quote('KAGEMUSHA_CONFIG=' + config_file)}",
        f"Environment=KAGEMUSHA_NODE={_quote(node)}",
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=on-failure",
        "RestartSec=2",
        "KillMode=mixed",
        f"TimeoutStopSec={stop_budget(config)}",
        "TimeoutStartSec=300",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=kagemusha",
        "LimitNOFILE=65536",
    ]
    if wd is not None:
        lines += [f"WatchdogSec={wd:g}", "WatchdogSignal=SIGKILL"]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _default_node(config: Config) -> str:
    env = os.environ.get("KAGEMUSHA_NODE")
    if env:
        return env
    host = socket.gethostname().split(".")[0]
    return host if host in config.node_names else ""


def install_service(
    config: str = ConfigOpt,
    node: str = typer.Option(None, "--node", "-n", help="this machine's node (default: $KAGEMUSHA_NODE or the host name)"),
    unit_dir: Path = typer.Option(Path("/etc/systemd/system"), "--unit-dir", help="where to write the unit"),
    name: str = typer.Option("kagemusha", "--name", help="unit name (kagemusha.service)"),
    stdout: bool = typer.Option(False, "--stdout", help="print the unit instead of writing it"),
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
    try:
        text = render_unit(cfg, node=node, config_file=path)
    except ValueError as exc:
        fail(str(exc), 2)
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
    if cfg.cluster.watchdog is not None and watchdog_seconds(cfg) is not None:
        out.print(f"watchdog: WatchdogSec={watchdog_seconds(cfg):g}", markup=False)
    err.print(f"next: systemctl daemon-reload && systemctl enable --now {name}", markup=False)


def register(root: typer.Typer) -> None:
    root.command("install-service")(install_service)
