"""The agent's supervisor: a small parent that fences the node when the agent itself dies.

``kagemusha agent`` runs as two processes: this parent, which does nothing but
wait, and the real agent as its child. Whatever way the child exits (``kill -9``,
a crash, an out-of-memory kill, a refusal to start, even a clean leave), the
parent at once fences every group configured on this node, in the config file it
was started with *and* in the config the agent last applied (the agent keeps it
in the node's state directory, ``APPLIED_CONFIG``): it kills every process of
those groups, removes their addresses and unmounts their disks (each resource's
``fence``), without the store, so they are down well before the dead agent's
lease can expire and a standby starts them. After a clean leave the fence finds
nothing and costs milliseconds. Which protection covers which failure is in
``docs/fencing.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from kagemusha import _proc
from kagemusha.config import Config

__all__ = ["applied_config", "fence_groups", "fence_node", "supervise"]

CHILD_ENV = "KAGEMUSHA_AGENT_CHILD"


def _log(msg: str, **kv: object) -> None:
    rec = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
           "level": "error" if "died" in msg or "fenced" in msg else "info", "logger": "kagemusha.supervisor",
           "msg": msg, **kv}
    print(json.dumps(rec, default=str), flush=True)


def applied_config(config: Config, node: str) -> Config | None:
    """The config the agent last applied on this node (kept in its state directory), or ``None``."""
    from pathlib import Path

    from kagemusha.agent._agent import APPLIED_CONFIG
    from kagemusha.config._stored import StoredConfig, parse_stored

    path = Path(config.state_dir_of(node)) / APPLIED_CONFIG
    try:
        rec = StoredConfig.from_value(path.read_text(encoding="utf-8"))
        return parse_stored(rec, local_path=config.source or str(path))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - unreadable: fence with the file's config alone, and say so
        _log("cannot read the applied config; fencing with the config file only", path=str(path), error=str(exc))
        return None


async def fence_groups(config: Config, node: str, *, also: Config | None = None) -> list[str]:
    """Fence every resource of every group of ``node`` in ``config`` and ``also`` (each driver's ``fence``).

    Never raises; returns what is not proven gone. No threads of its own, so the simulation runs it on its
    virtual loop as it is.
    """
    from kagemusha.agent._groups import GroupRuntime

    problems: list[str] = []
    rts = []
    seen: set[tuple[str, str]] = set()
    for cfg in (config, also) if also is not None else (config,):
        for spec in cfg.groups:
            if node not in spec.nodes or node not in cfg.node_names:
                continue
            key = (spec.name, repr(spec.resources))
            if key in seen:
                continue
            seen.add(key)
            try:
                rts.append(GroupRuntime.build(cfg, spec, node))
            except Exception as exc:  # noqa: BLE001 - a driver that cannot even be built must not stop the rest
                problems.append(f"{spec.name}: {exc}")
    results = await asyncio.gather(*(rt.fence() for rt in rts), return_exceptions=True)
    for rt, res in zip(rts, results):
        if isinstance(res, BaseException):
            problems.append(f"{rt.name}: {res}")
        else:
            problems.extend(f"{rt.name}: {p}" for p in res)
    return problems


async def fence_node(config: Config, node: str, *, also: Config | None = None) -> list[str]:
    """``fence_groups``, then kill anything still tagged with the node. Never raises."""
    problems = await fence_groups(config, node, also=also)
    killed = await asyncio.to_thread(
        _proc.kill_tagged, {"KAGEMUSHA_CLUSTER_ID": config.cluster_id, "KAGEMUSHA_NODE": node}, wait=1.0
    )
    if killed:
        problems.append(f"killed leftover processes {killed}")
    return problems


def supervise(config: Config, node: str, child_argv: list[str]) -> int:
    """Run the agent as a child; fence the node if it dies uncleanly. Returns the exit code."""
    env = {**os.environ, CHILD_ENV: "1"}
    # Own session: a terminal's Ctrl-C reaches only this parent, which forwards it once.
    child = subprocess.Popen(child_argv, env=env, start_new_session=True)

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    # NB: whatever the exit: a clean leave (0) or a refusal to start (2) may still leave something
    # behind (a leave cut short by a second signal, leftovers the agent found but could not fence).
    t0 = time.monotonic()
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
    applied = applied_config(config, node)
    problems = asyncio.run(fence_node(config, node, also=applied))
    # Not proven: retry while the dead agent's lease may still live (a watchdog, if any, escalates).
    deadline = t0 + config.cluster.heartbeat_timeout
    while [p for p in problems if not p.startswith("killed leftover")] and time.monotonic() < deadline:
        time.sleep(0.05)
        problems = asyncio.run(fence_node(config, node, also=applied))
    if rc in (0, 2) and not problems:
        return rc
    _log("agent died: fenced the node" if rc not in (0, 2) else "agent exited: fenced its leftovers", node=node,
         how=how, seconds=round(time.monotonic() - t0, 3), problems="; ".join(problems))
    return 1 if rc not in (0, 2) else rc


def child_argv(config_path: str, node: str, apply: bool) -> list[str]:
    argv = [sys.executable, "-m", "kagemusha", "agent", "--config", config_path, "--node", node]
    return argv + (["--apply"] if apply else [])
