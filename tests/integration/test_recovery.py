"""Monitor recovery chain with real agents: restart in place, then failover, then the final action."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.integration.cluster import LocalCluster


def kill_service(c: LocalCluster, node: str) -> int:
    pidfile = c.dir / "svc" / f"webotx1.{node}.pid"
    deadline = time.monotonic() + 10
    while not pidfile.exists():
        assert time.monotonic() < deadline, f"no service pid file on {node}"
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_starts(c: LocalCluster, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while len(c.starts("webotx1")) < n:
        assert time.monotonic() < deadline, f"expected {n} starts, trace: {c.trace()}\n{c.log('n1')[-4000:]}"
        time.sleep(0.05)


def test_restart_then_failover_then_final_action(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    svc = str(c.dir / "svc")
    monitor = {
        "name": "svcmon", "type": "exec", "interval": 0.2, "timeout": 2.0, "retries": 2,
        "restart_limit": 1, "failover_limit": 1, "final_action": "stop_group",
        "command": 'kill -0 "$(cat "$SVC/$KAGEMUSHA_GROUP.$KAGEMUSHA_NODE.pid")"', "env": {"SVC": svc},
    }
    c.groups = [c.group("webotx1", ["n1", "n2"], monitors=[monitor])]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    # 1st failure on n1: restart in place
    kill_service(c, "n1")
    wait_starts(c, 2)
    s = c.starts("webotx1")[-1]
    assert (s.node, s.event) == ("n1", "START")
    c.wait_group("webotx1", "online", "n1")
    # 2nd failure on n1: restart_limit reached -> failover to n2
    time.sleep(0.5)
    kill_service(c, "n1")
    wait_starts(c, 3)
    s = c.starts("webotx1")[-1]
    assert (s.node, s.event, s.server) == ("n2", "FAILOVER", "OTHER")
    c.wait_group("webotx1", "online", "n2")
    # failure on n2: restart there first (restarts are per node)
    kill_service(c, "n2")
    wait_starts(c, 4)
    assert c.starts("webotx1")[-1].node == "n2"
    c.wait_group("webotx1", "online", "n2")
    time.sleep(0.5)
    # again: failover_limit reached -> final action stop_group
    kill_service(c, "n2")
    g, _ = c.wait_group("webotx1", "offline", None, timeout=15)
    assert g["node"] is None
    time.sleep(1.0)
    assert len(c.starts("webotx1")) == 4, "nothing starts after the final action"
    ev = c.status()
    mons = ev["groups"][0]["monitors"]
    assert mons[0]["name"] == "svcmon"
    # an operator start clears the fail counts and brings it back
    r = c.cli("group", "start", "webotx1", "--wait", "30")
    assert r.returncode == 0, r.stderr
    # ... with a fresh recovery chain: its next failure restarts it in place again (the node's restart
    # history from before, within failure_expiry, once made it fail over at once)
    g, _ = c.wait_group("webotx1", "online", None)
    node, n = g["node"], len(c.starts("webotx1"))
    kill_service(c, node)
    wait_starts(c, n + 1)
    s = c.starts("webotx1")[-1]
    assert (s.node, s.event) == (node, "START"), c.trace()


def test_start_failure_fails_over_and_then_reports_failed(make_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    bad = c.dir / "badstart.sh"
    bad.write_text('#!/bin/sh\necho "boom on $KAGEMUSHA_NODE $CLP_EVENT"\nexit 3\n')
    bad.chmod(0o755)
    grp = c.group("webotx1", ["n1", "n2"])
    grp["resources"].append({"name": "exec2", "type": "exec", "start": str(bad), "stop": "stop.sh",
                             "env": {"TRACE": str(c.trace_file), "SVC": svc_dir(c)}})
    c.groups = [grp]
    c.cluster["startup_wait"] = 15.0  # n2 must not take the group before n1 joins, however slow the machine
    c.write_config()
    c.start("n2")  # the standby is up first, so "failed" is only reached once both nodes tried
    c.wait_up("n2")
    c.start("n1")
    g, _ = c.wait_group("webotx1", "failed", None, timeout=20)
    assert "exec2" in g["reason"] and "exited with 3" in g["reason"], g
    starts = c.starts("webotx1")
    assert [(s.node, s.event) for s in starts] == [("n1", "START"), ("n2", "FAILOVER")]
    stops = [t for t in c.trace() if t.kind == "stop"]
    assert [t.node for t in stops] == ["n1", "n2"], "what started is stopped again in reverse"
    assert "boom on n1 START" in c.log("n1"), "script output is logged, tagged with group and resource"
    r = c.cli("status")
    assert r.returncode == 0 and "failed" in r.stdout


def svc_dir(c: LocalCluster) -> str:
    return str(c.dir / "svc")


def test_stop_failure_fences_the_node_before_anyone_else_starts(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    badstop = c.dir / "badstop.sh"
    badstop.write_text('#!/bin/sh\necho "cannot stop"\nexit 1\n')
    badstop.chmod(0o755)
    grp = c.group("webotx1", ["n1", "n2"])
    grp["resources"][0]["stop"] = str(badstop)
    c.groups = [grp]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    svc_pid = int((c.dir / "svc" / "webotx1.n1.pid").read_text())
    r = c.cli("group", "move", "webotx1", "--to", "n2", "--wait", "20")
    assert r.returncode == 0, r.stderr + c.log("n1")[-3000:]
    # n1 fenced itself (killed its service) and left; only then n2 started
    import psutil

    assert not psutil.pid_exists(svc_pid) or psutil.Process(svc_pid).status() == psutil.STATUS_ZOMBIE
    assert c.procs["n1"].wait(10) == 1
    c.procs.pop("n1")
    assert "stop failed" in c.log("n1")
    # The fence is the end of n1's run: assert_no_overlap (at teardown) reads it from n1's log.
    assert c.starts("webotx1")[-1].node == "n2"


def test_script_timeout_kills_the_whole_tree(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(nodes=("n1",))
    hang = c.dir / "hang.sh"
    hang.write_text('#!/bin/sh\nsetsid sleep 3600 &\necho $! > "$SVC/hang.pid"\nsleep 3600\n')
    hang.chmod(0o755)
    grp = c.group("webotx1", ["n1"])
    grp["resources"] = [{"name": "exec1", "type": "exec", "start": str(hang), "stop": "stop.sh", "start_timeout": 1.0,
                         "env": {"TRACE": str(c.trace_file), "SVC": svc_dir(c)}}]
    c.groups = [grp]
    c.write_config()
    c.start_all()
    g, _ = c.wait_group("webotx1", "failed", None, timeout=20)
    assert "timed out after 1s" in g["reason"]
    import psutil

    pid = int((c.dir / "svc" / "hang.pid").read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "detached child killed"
