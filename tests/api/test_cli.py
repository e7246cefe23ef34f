"""The CLI's API client when no agent answers: actions fail in one line, status reads the store."""

from __future__ import annotations

import json
from pathlib import Path

from tests.api.conftest import TOKEN
from tests.integration.cluster import LocalCluster


def test_no_agent_answers(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c", api_token=TOKEN)  # configured, never started
    try:
        r = c.cli("group", "move", "webotx1", "--to", "n2", "--wait", "1")
        assert r.returncode == 1, r.stderr
        line, = r.stderr.strip().splitlines()
        assert line.startswith("kagemusha: no agent API answered (n1 at http://127.0.0.1:")
        assert "n2 at http://127.0.0.1:" in line and "connection refused" in line
        r = c.cli("status", "--json")
        assert r.returncode == 0, r.stderr
        assert "no agent API answered" in r.stderr and "reading the cluster store directly" in r.stderr
        assert [n["state"] for n in json.loads(r.stdout)["nodes"]] == ["down", "down"]
        r = c.cli("monitor", "suspend", "webotx1", "nomon")
        assert r.returncode == 1 and "Traceback" not in r.stderr
    finally:
        c.close()


def test_without_a_token_the_cli_uses_the_store(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c")
    try:
        c.start_all()
        c.wait_group("webotx1", "online", "n1")
        r = c.cli("node", "standby", "n1", "--wait", "20", "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["nodes"][0]["standby"] is True and st["groups"][0]["node"] == "n2"
        r = c.cli("node", "unstandby", "n1")
        assert r.returncode == 0 and "node n1: active, runs no group" in r.stdout, r.stdout + r.stderr
        r = c.cli("status", "--events", "5")
        assert r.returncode == 0 and "events" in r.stdout and "unstandby" in r.stdout
        r = c.cli("monitor", "suspend", "webotx1", "nomon")
        assert r.returncode == 2 and 'no monitor "nomon"' in r.stderr
    finally:
        c.close()
