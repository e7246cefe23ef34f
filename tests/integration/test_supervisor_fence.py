"""The supervisor fences whatever way the agent exits, with the config the agent last applied (issue 10).

Both fail on the code before the fix: the supervisor fenced only with the config file it loaded at
start, and took exit 2 (the agent refused its config) as "nothing runs"; the agent checked its config
before probing leftovers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from kagemusha import _supervisor
from kagemusha.agent import APPLIED_CONFIG
from kagemusha.config import parse_config
from kagemusha.config._stored import StoredConfig
from tests.agent.test_safety_holes import Steer, standin  # noqa: F401 - the stand-in driver fixture
from tests.integration.cluster import LocalCluster


def _cfg(tmp_path: Path, groups: list[dict[str, Any]]) -> Any:
    data = {
        "cluster": {"name": "sup", "store": f"local:{tmp_path}/store.db", "state_dir": str(tmp_path / "state")},
        "nodes": [{"name": "n1", "address": "127.0.0.1:1"}],
        "groups": groups,
    }
    return data


def test_the_supervisor_fences_groups_of_the_applied_config(tmp_path: Path, standin: Any) -> None:  # noqa: F811
    import tomli_w

    g1 = {"name": "g1", "nodes": ["n1"], "resources": [{"name": "r", "type": "standin"}]}
    g2 = {"name": "g2", "nodes": ["n1"], "resources": [{"name": "r", "type": "standin"}]}
    path = tmp_path / "cluster.toml"
    path.write_text(tomli_w.dumps(_cfg(tmp_path, [g1])))
    from_file = parse_config(_cfg(tmp_path, [g1]), source=str(path), base_dir=tmp_path)
    # the agent applied a newer config (with g2) and kept it for the supervisor
    state = Path(from_file.state_dir_of("n1"))
    state.mkdir(parents=True)
    text = tomli_w.dumps(_cfg(tmp_path, [g1, g2]))
    (state / APPLIED_CONFIG).write_text(StoredConfig.new(text, 2, "agent n1").to_value())
    applied = _supervisor.applied_config(from_file, "n1")
    assert applied is not None and [g.name for g in applied.groups] == ["g1", "g2"]
    Steer.running = {"n1"}
    problems = asyncio.run(_supervisor.fence_node(from_file, "n1", also=applied))
    assert not [p for p in problems if not p.startswith("killed leftover")]
    assert Steer.fence_calls == 2, "g2, added by config apply, was not fenced"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_leftovers_are_fenced_when_the_agent_refuses_its_config(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(nodes=("n1",))
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    svc = int((c.dir / "svc" / "webotx1.n1.pid").read_text())
    # The node "loses" its agent and supervisor, but the service lives on (a leftover).
    p = c.procs.pop("n1")
    kids = [k for k in LocalCluster.agent_children(p) if "agent" in " ".join(k.cmdline())]
    p.send_signal(signal.SIGKILL)
    p.wait(5)
    for k in kids:
        os.kill(k.pid, signal.SIGKILL)
    assert _alive(svc), c.log("n1")[-3000:]
    # The file now differs from the applied config: the agent refuses to start (exit 2) ...
    c.cluster["startup_wait"] = 2.5
    c.write_config()
    p2 = c.start("n1")
    assert p2.wait(30) == 2
    c.procs.pop("n1")
    # ... and the leftover is gone all the same.
    deadline = time.monotonic() + 5
    while _alive(svc):
        assert time.monotonic() < deadline, "the leftover service survived an agent that exited 2"
        time.sleep(0.05)


def test_the_agent_marker_does_not_reach_scripts_or_their_services(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Regression: ``KAGEMUSHA_AGENT_CHILD`` (how the supervisor's child knows it is the agent) leaked
    into the scripts' environment and so into every service they start; the fault campaign took a
    domain started by start.sh for the agent and SIGSTOPped it (runs failed once pids wrapped)."""
    from kagemusha._supervisor import CHILD_ENV

    c: LocalCluster = make_cluster(nodes=("n1",))
    c.start("n1")
    c.wait_group("webotx1", "online", "n1")
    svc = int((c.dir / "svc" / "webotx1.n1.pid").read_text())
    assert CHILD_ENV not in psutil.Process(svc).environ()
    assert psutil.Process(c.agent_pid("n1")).environ().get(CHILD_ENV) == "1"  # the agent itself has it
