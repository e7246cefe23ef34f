"""The agent's supervisor: a small parent that fences the node when the agent itself dies.

``kagemusha agent`` runs as two processes: this parent, which does nothing but
wait, and the real agent as its child. If the child exits other than by a
clean leave (``kill -9``, a crash, an out-of-memory kill), the parent at once
kills every process of the node's groups, removes their addresses and
unmounts their disks (each resource's ``fence``), without the store, so they
are down well before the dead agent's lease can expire and a standby starts
them. Which protection covers which failure is in ``docs/fencing.md``.
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

__all__ = ["fence_node", "supervise"]

CHILD_ENV = "KAGEMUSHA_AGENT_CHILD"


def _log(msg: str, **kv: object) -> None:
    rec = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
           "level": "error" if "died" in msg or "fenced" in msg else "info", "logger": "kagemusha.supervisor",
           "msg": msg, **kv}
    print(json.dumps(rec, default=str), flush=True)


async def fence_node(config: Config, node: str) -> list[str]:
    """Fence every resource of every group of ``node``; then kill anything still tagged with it. Never raises."""
    from kagemusha.agent._groups import GroupRuntime

    problems: list[str] = []
    rts = []
    for spec in config.groups:
        if node in spec.nodes:
            try:
                rts.append(GroupRuntime.build(config, spec, node))
            except Exception as exc:  # a driver that cannot even be built must not stop the rest
                problems.append(f"{spec.name}: {exc}")
    results = await asyncio.gather(*(rt.fence() for rt in rts), return_exceptions=True)
    for rt, res in zip(rts, results):
        if isinstance(res, BaseException):
            problems.append(f"{rt.name}: {res}")
        else:
            problems.extend(f"{rt.name}: {p}" for p in res)
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
    if rc in (0, 2):  # left cleanly / refused to start (bad config): nothing runs
        return rc
    t0 = time.monotonic()
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
    problems = asyncio.run(fence_node(config, node))
    _log("agent died: fenced the node", node=node, how=how, seconds=round(time.monotonic() - t0, 3),
         problems="; ".join(problems))
    return 1


def child_argv(config_path: str, node: str, apply: bool) -> list[str]:
    argv = [sys.executable, "-m", "kagemusha", "agent", "--config", config_path, "--node", node]
    return argv + (["--apply"] if apply else [])
