"""Two and three real agents on one local store: crash, leave, move, failback, mutual standby."""

from __future__ import annotations

import time

from tests.integration.cluster import LocalCluster


def test_crash_fails_over_within_ttl_plus_one(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    (first,) = c.starts("webotx1")
    assert (first.node, first.event, first.server, first.disk) == ("n1", "START", "HOME", "SUCCESS")
    crashed_at = c.crash("n1")
    c.wait_group("webotx1", "online", "n2", timeout=10)
    start = c.starts("webotx1")[-1]
    assert (start.node, start.event, start.server) == ("n2", "FAILOVER", "OTHER")
    assert start.at - crashed_at < c.config.cluster.heartbeat_timeout + 1.0, start.at - crashed_at  # type: ignore[union-attr]
    st = c.status()
    assert {n["name"]: n["state"] for n in st["nodes"]} == {"n1": "down", "n2": "up"}


def test_sigterm_leave_hands_over_at_once_with_start_event(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    t0 = time.time()
    assert c.leave("n1") == 0
    c.wait_group("webotx1", "online", "n2", timeout=10)
    stop = [t for t in c.trace() if t.kind == "stop"][-1]
    assert (stop.node, stop.event) == ("n1", "START"), "the stop script gets the event the group started with"
    start = c.starts("webotx1")[-1]
    assert (start.node, start.event) == ("n2", "START")
    assert start.at - t0 < 3.0, "a leave hands over without waiting for the lease to expire"


def test_group_move_and_manual_failback(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    r = c.cli("group", "move", "webotx1", "--to", "n2", "--wait", "30")
    assert r.returncode == 0, r.stderr
    assert "online on n2" in r.stdout
    assert c.starts("webotx1")[-1].event == "START"
    # crash n2: back to n1 (FAILOVER); n2 rejoins: manual failback keeps it on n1
    c.crash("n2")
    c.wait_group("webotx1", "online", "n1", timeout=10)
    assert c.starts("webotx1")[-1].event == "FAILOVER"
    c.start("n2")
    time.sleep(2.0)
    assert c.group_status("webotx1")["node"] == "n1"
    # bad usage and impossible moves
    r = c.cli("group", "move", "webotx1", "--to", "n9")
    assert r.returncode == 2 and "no node" in r.stderr and "Traceback" not in r.stderr
    r = c.cli("group", "move", "nogroup", "--to", "n1")
    assert r.returncode == 2 and "no group" in r.stderr


def test_auto_failback_returns_home(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.groups = [c.group("webotx1", ["n1", "n2"], failback="auto")]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    c.crash("n1")
    c.wait_group("webotx1", "online", "n2", timeout=10)
    c.start("n1")
    c.wait_group("webotx1", "online", "n1", timeout=15)
    assert c.starts("webotx1")[-1].event == "START" and c.starts("webotx1")[-1].server == "HOME"


def test_group_stop_and_start(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    r = c.cli("group", "stop", "webotx1", "--wait", "30")
    assert r.returncode == 0, r.stderr
    assert c.group_status("webotx1")["state"] == "offline"
    r = c.cli("group", "start", "webotx1", "--node", "n2", "--wait", "30")
    assert r.returncode == 0, r.stderr
    assert c.group_status("webotx1")["node"] == "n2"
    r = c.cli("status", "--json")
    assert r.returncode == 0
    import json

    st = json.loads(r.stdout)
    assert st["groups"][0]["resources"] == [{"name": "exec1", "type": "exec", "state": "online"}]


def test_mutual_standby_both_groups_on_survivor(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.groups = [c.group("webotx1", ["n1", "n2"]), c.group("webotx2", ["n2", "n1"])]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    c.wait_group("webotx2", "online", "n2")
    c.crash("n2")
    c.wait_group("webotx2", "online", "n1", timeout=10)
    assert c.group_status("webotx1")["node"] == "n1"
    s = c.starts("webotx2")[-1]
    assert (s.node, s.event, s.server) == ("n1", "FAILOVER", "OTHER")


def test_three_nodes_priority_order(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(nodes=("n1", "n2", "n3"))
    c.groups = [c.group("webotx1", ["n1", "n3", "n2"])]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    c.crash("n1")
    c.wait_group("webotx1", "online", "n3", timeout=10)
    c.crash("n3")
    c.wait_group("webotx1", "online", "n2", timeout=10)


def test_store_unavailable_fences_before_ttl(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """The store file is locked away: the owner stops its service before its lease could expire."""
    import sqlite3

    c: LocalCluster = make_cluster(nodes=("n1",))
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    svc_pid = int((c.dir / "svc" / "webotx1.n1.pid").read_text())
    import psutil

    holder = sqlite3.connect(c.dir / "store.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    t0 = time.monotonic()
    try:
        while psutil.pid_exists(svc_pid) and psutil.Process(svc_pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() - t0 < c.config.cluster.heartbeat_timeout + 0.5, "service still running"  # type: ignore[union-attr]
            time.sleep(0.01)
        fenced_after = time.monotonic() - t0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert fenced_after < c.config.cluster.heartbeat_timeout  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while '"fenced: stopped every resource"' not in c.log("n1"):
        assert time.monotonic() < deadline, c.log("n1")
        time.sleep(0.05)
    # the store is back: the node rejoins and starts the group once more
    c.wait_group("webotx1", "online", "n1", timeout=10)


def test_agent_killed_alone_its_services_die_before_the_standby_starts(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the agent only: the supervisor fences the node; sampled every 10 ms, never two services."""
    import os
    import signal
    import threading

    import psutil

    c: LocalCluster = make_cluster()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    svc_dir = c.dir / "svc"

    def running() -> set[str]:
        out = set()
        for f in svc_dir.glob("webotx1.*.pid"):
            try:
                pid = int(f.read_text())
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.add(f.name.split(".")[1])
            except (ValueError, OSError, psutil.Error):
                continue
        return out

    samples: list[set[str]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(running())
            time.sleep(0.01)

    th = threading.Thread(target=sample)
    th.start()
    try:
        os.kill(c.agent_pid("n1"), signal.SIGKILL)
        c.wait_group("webotx1", "online", "n2", timeout=10)
        time.sleep(0.2)
    finally:
        stop.set()
        th.join()
    assert all(len(s) <= 1 for s in samples), [s for s in samples if len(s) > 1][:3]
    assert samples[-1] == {"n2"}
    assert c.procs["n1"].wait(10) == 1, "the supervisor exits 1 after fencing"
    c.procs.pop("n1")
    assert "agent died: fenced the node" in c.log("n1")


def test_watchdog_is_pinged_while_groups_run_and_disarmed_after(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """With ``cluster.watchdog`` set, the agent pings the device while it runs a group, magic-closes it on leave.

    A regular file stands in for /dev/watchdog (there is none here, and a real one would reset the machine).
    """
    c: LocalCluster = make_cluster(nodes=("n1",))
    dev = c.dir / "watchdog"
    dev.write_bytes(b"")
    c.cluster.update({"watchdog": str(dev), "heartbeat_timeout": 2.0})
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    time.sleep(1.0)
    assert dev.read_bytes().count(b"\0") >= 3, "pinged at every lease renewal"
    assert c.leave("n1") == 0
    assert dev.read_bytes().endswith(b"V"), "magic close after the groups stopped"


def test_watchdog_needs_whole_seconds(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(nodes=("n1",))
    c.cluster.update({"watchdog": "/dev/watchdog"})
    import pytest

    from kagemusha.errors import ConfigError

    with pytest.raises(ConfigError, match="cluster.watchdog"):
        c.write_config()
