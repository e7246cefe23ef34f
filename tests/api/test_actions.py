"""Each action through the API really changes the cluster, and is audited in the event log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.api.conftest import client
from tests.integration.cluster import LocalCluster


def group(st: dict[str, Any], name: str = "webotx1") -> dict[str, Any]:
    return next(g for g in st["groups"] if g["name"] == name)


def test_move_stop_start_and_audit(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster()
    with client(c, "n2") as http:  # any agent takes any action
        r = http.post("/groups/webotx1/move", json={"to": "n2", "wait": 20})
        assert r.status_code == 200, r.text
        assert (r.json()["state"], r.json()["node"]) == ("online", "n2")
        assert c.starts("webotx1")[-1].node == "n2" and c.starts("webotx1")[-1].event == "START"
        assert http.get("/groups/webotx1/primary").status_code == 200
        with client(c, "n1", token=None) as h1:
            assert h1.get("/groups/webotx1/primary").status_code == 503

        r = http.post("/groups/webotx1/stop", json={"wait": 20})
        assert r.status_code == 200 and r.json()["state"] == "offline" and r.json()["node"] is None
        assert group(http.get("/cluster").json())["state"] == "offline"
        assert [t.kind for t in c.trace()][-1] == "stop"

        r = http.post("/groups/webotx1/start", json={"node": "n1", "wait": 20})
        assert r.status_code == 200 and (r.json()["state"], r.json()["node"]) == ("online", "n1"), r.text

        r = http.post("/groups/webotx1/move", json={"to": "n2"})  # wait 0: accepted, carried out after
        assert r.status_code == 202, r.text
        c.wait_group("webotx1", "online", "n2")

        events = http.get("/events", params={"limit": 100}).json()["events"]
    asked = [(e["kind"], e["reason"], e["by"]) for e in events if e["kind"].endswith("_requested")]
    assert asked == [
        ("move_requested", "group move to n2", "api token@127.0.0.1"),
        ("stop_requested", "group stop", "api token@127.0.0.1"),
        ("start_requested", "group start on n1", "api token@127.0.0.1"),
        ("move_requested", "group move to n2", "api token@127.0.0.1"),
    ]
    assert all(isinstance(e["at"], float) for e in events)
    assert '"action": "group move"' in c.log("n2")


def test_standby_drains_and_monitor_suspend_shows(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster()
    with client(c, "n1") as http:
        r = http.post("/nodes/n1/standby", json={"wait": 20})
        assert r.status_code == 200, r.text
        st = r.json()
        assert next(n for n in st["nodes"] if n["name"] == "n1")["standby"] is True
        assert (group(st)["state"], group(st)["node"]) == ("online", "n2"), "standby moved the group away"
        r = http.post("/groups/webotx1/move", json={"to": "n1", "wait": 5})
        assert r.status_code == 409 and "standby" in r.json()["detail"], r.text
        r = http.post("/nodes/n1/unstandby")
        assert r.status_code == 202
        assert next(n for n in r.json()["nodes"] if n["name"] == "n1")["standby"] is False
        time.sleep(0.5)
        assert group(http.get("/cluster").json())["node"] == "n2", "manual failback: it stays on n2"

        r = http.post("/groups/webotx1/monitors/svcmon/suspend")
        assert r.status_code == 200 and r.json()["monitors"][0]["suspended"] is True
        assert group(http.get("/cluster").json())["monitors"][0]["suspended"] is True
        # the agent honours it: a dead service is not noticed while the monitor is suspended
        pid = int((c.dir / "svc" / "webotx1.n2.pid").read_text())
        subprocess.run(["kill", "-9", str(pid)], check=True)
        time.sleep(1.0)
        assert len(c.starts("webotx1")) == 2, f"no restart while suspended: {c.trace()} {c.log('n2')[-4000:]}"
        r = http.post("/groups/webotx1/monitors/svcmon/resume")
        assert r.status_code == 200 and r.json()["monitors"][0]["suspended"] is False
        deadline = time.monotonic() + 10
        while len(c.starts("webotx1")) < 3:
            assert time.monotonic() < deadline, "resumed monitor did not recover the service"
            time.sleep(0.05)
        kinds = [e["kind"] for e in http.get("/events").json()["events"]]
    assert {"standby", "unstandby", "monitor_suspend", "monitor_resume"} <= set(kinds)


def test_cli_goes_through_the_api(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster()
    r = c.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    assert group(json.loads(r.stdout))["node"] == "n1"
    r = c.cli("group", "move", "webotx1", "--to", "n2", "--wait", "20", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["node"] == "n2"
    r = c.cli("monitor", "suspend", "webotx1", "svcmon")
    assert r.returncode == 0 and "suspended" in r.stdout, r.stderr
    r = c.cli("node", "standby", "n2", "--wait", "20")
    assert r.returncode == 0 and "node n2: standby, runs no group" in r.stdout, r.stderr + r.stdout
    r = c.cli("node", "unstandby", "n2", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["nodes"][1]["standby"] is False
    r = c.cli("status", "--events", "20", "--json")
    by = {e["by"] for e in json.loads(r.stdout)["events"] if e["kind"] in ("move_requested", "standby")}
    assert len(by) == 1 and by.pop().startswith("api token@127.0.0.1 (cli "), "audited as the API, naming the CLI"
    # bad usage: exit 2 with the field; the API down on n1: n2 answers
    r = c.cli("group", "move", "webotx1", "--to", "n9")
    assert r.returncode == 2 and 'to: no node "n9"' in r.stderr and "Traceback" not in r.stderr
    r = c.cli("monitor", "resume", "webotx1", "nomon")
    assert r.returncode == 2 and 'no monitor "nomon"' in r.stderr
    c.crash("n1")
    r = c.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    assert [n["state"] for n in json.loads(r.stdout)["nodes"]] in (["down", "up"], ["up", "up"])
    # a wrong token: one line, exit 1
    bad = c.dir / "bad.token"
    bad.write_text("nope\n")
    bad.chmod(0o600)
    other = c.dir / "other.toml"
    other.write_text(c.config_path.read_text().replace(str(c.dir / "api.token"), str(bad)))
    r = subprocess.run([sys.executable, "-m", "kagemusha", "status", "--config", str(other)], check=False,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "refused the token" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
