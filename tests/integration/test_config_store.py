"""Cluster configuration kept in the store: apply/show/diff, refusal of bad configs, live apply of differences."""

from __future__ import annotations

import json
import time

from tests.integration.cluster import LocalCluster


def monitor(c: LocalCluster, interval: float) -> dict[str, object]:
    return {"name": "tick", "type": "exec", "interval": interval, "timeout": 2.0, "retries": 3,
            "command": f'date +%s.%N >> {c.dir / "ticks"}'}


def ticks(c: LocalCluster) -> list[float]:
    p = c.dir / "ticks"
    return [float(x) for x in p.read_text().split()] if p.exists() else []


def test_apply_show_diff_round_trip(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    r = c.cli("config", "show")
    assert r.returncode == 1 and "no config applied" in r.stderr
    r = c.cli("config", "diff", str(c.config_path))
    assert r.returncode == 1 and "first version" in r.stdout
    r = c.cli("config", "apply", str(c.config_path))
    assert r.returncode == 0 and "config version 1 applied" in r.stdout, r.stderr
    r = c.cli("config", "diff", str(c.config_path))
    assert r.returncode == 0 and "no change" in r.stdout
    r = c.cli("config", "show", "--json")
    assert json.loads(r.stdout)["version"] == 1
    # a change: diff shows it, apply stores version 2
    c.groups[0]["failback"] = "auto"
    c.write_config()
    r = c.cli("config", "diff", str(c.config_path))
    assert r.returncode == 1 and "group webotx1.failback: 'manual' -> 'auto'" in r.stdout
    assert '+failback = "auto"' in r.stdout
    r = c.cli("config", "apply", str(c.config_path))
    assert r.returncode == 0 and "config version 2 applied" in r.stdout
    r = c.cli("config", "show", "--toml")
    assert "version 2" in r.stdout and 'failback = "auto"' in r.stdout


def test_bad_config_is_refused_whole(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    assert c.cli("config", "apply", str(c.config_path)).returncode == 0
    bad = c.dir / "bad.toml"
    bad.write_text(c.config_path.read_text().replace('stop = "stop.sh"', 'stop = "gone.sh"'))
    r = c.cli("config", "apply", str(bad))
    assert r.returncode == 2 and "groups[0].resources[0].stop" in r.stderr
    r = c.cli("config", "show", "--json")
    assert json.loads(r.stdout)["version"] == 1, "the running config is untouched"


def test_agent_refuses_a_config_that_differs_unless_told_to_apply(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster(nodes=("n1",))
    assert c.cli("config", "apply", str(c.config_path)).returncode == 0
    c.groups[0]["failback"] = "auto"
    c.write_config()
    p = c.start("n1")
    assert p.wait(30) == 2
    c.procs.pop("n1")
    assert "differs from the config applied" in c.log("n1")
    import subprocess
    import sys

    p2 = subprocess.Popen([sys.executable, "-m", "kagemusha", "agent", "-c", str(c.config_path), "-n", "n1", "--apply"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    c.procs["n1"] = p2
    c.wait_group("webotx1", "online", "n1")
    r = c.cli("config", "show", "--json")
    assert json.loads(r.stdout)["version"] == 2


def test_running_agents_apply_the_difference(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c: LocalCluster = make_cluster()
    c.groups = [c.group("webotx1", ["n1", "n2"], monitors=[monitor(c, 5.0)]), c.group("webotx2", ["n2", "n1"])]
    c.write_config()
    c.start_all()
    c.wait_group("webotx1", "online", "n1")
    c.wait_group("webotx2", "online", "n2")
    time.sleep(1.0)
    assert len(ticks(c)) <= 1, "interval 5 s: at most one check yet"
    # faster monitor, and webotx2 removed
    c.groups = [c.group("webotx1", ["n1", "n2"], monitors=[monitor(c, 0.2)])]
    c.write_config()
    r = c.cli("config", "apply", str(c.config_path))
    assert r.returncode == 0, r.stderr
    assert "group webotx2 removed" in r.stdout
    deadline = time.monotonic() + 10
    while len(ticks(c)) < 6:
        assert time.monotonic() < deadline, "the new monitor interval did not take effect"
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while not [t for t in c.trace() if t.kind == "stop" and t.group == "webotx2"]:
        assert time.monotonic() < deadline, "the removed group was not stopped"
        time.sleep(0.1)
    assert c.procs["n1"].poll() is None and c.procs["n2"].poll() is None, "agents kept running"
    assert [s.node for s in c.starts("webotx1")] == ["n1"], "webotx1 was not restarted"
    assert '"config changed"' in c.log("n1")
