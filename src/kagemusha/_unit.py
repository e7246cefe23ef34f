"""The systemd unit that runs a node's agent (``kagemusha install-service`` and ``kagemusha build``)."""

from __future__ import annotations

import math
import re
import sys

from kagemusha.config import Config

__all__ = ["render_unit", "stop_budget"]


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
                except Exception:  # noqa: BLE001 - an unknown type was reported by config validation; be generous
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
    """The text of ``kagemusha.service`` for ``node``."""
    wd = config.cluster.watchdog
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
        "Type=simple",
        *([f"# cluster.watchdog: the agent arms {wd} while it runs groups; the device must exist",
           f"ExecStartPre=/usr/bin/test -c {_quote(wd)}"] if wd else []),
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
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
