"""How the API lives inside the agent: it never takes the agent down, it is never open, tokens rotate."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

import kagemusha.api
from tests.api.conftest import TOKEN, client, monitor_spec, wait_api
from tests.integration.cluster import LocalCluster


def test_public_surface() -> None:
    assert kagemusha.api.__all__ == ["create_app", "serve"]
    assert all(callable(getattr(kagemusha.api, name)) for name in kagemusha.api.__all__)


def test_port_taken_the_agent_runs_and_the_api_comes_when_free(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c", api_token=TOKEN)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", c.base_port))  # n1's address
    blocker.listen()
    try:
        c.start_all()
        c.wait_group("webotx1", "online", "n1")  # the agent joined and runs its group without its API
        deadline = time.monotonic() + 10
        while '"api not serving, retrying"' not in c.log("n1"):
            assert time.monotonic() < deadline, c.log("n1")[-2000:]
            time.sleep(0.05)
        assert "Traceback" not in c.log("n1")
        blocker.close()
        wait_api(c, "n1", timeout=15)  # retried after 0.5 s, 1 s, 2 s, ... at most 5 s apart
        with client(c, "n1") as http:
            assert http.get("/cluster").json()["groups"][0]["node"] == "n1"
    finally:
        blocker.close()
        c.close()


def test_without_a_token_the_api_is_disabled_not_open(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c")
    try:
        c.start("n1")
        c.wait_group("webotx1", "online", "n1", timeout=15)
        wait_api(c, "n1")
        with client(c, "n1", token="anything") as http:
            r = http.get("/cluster")
            assert r.status_code == 503 and "cluster.api_token_file is not set" in r.json()["detail"]
            assert http.post("/groups/webotx1/stop").status_code == 503
            assert http.get("/groups/webotx1/primary").status_code == 200
        assert c.group_status("webotx1")["state"] == "online"
    finally:
        c.close()


def test_token_rotation_and_the_live_stream(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c", nodes=("n1",), api_token=TOKEN)
    c.groups = [c.group("webotx1", ["n1"], monitors=[monitor_spec(c)])]
    c.write_config()
    try:
        c.start_all()
        c.wait_group("webotx1", "online", "n1")
        wait_api(c, "n1")
        with client(c, "n1") as http, http.stream("GET", "/live") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            seen: dict[str, object] = {}
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    seen[event] = json.loads(line[6:])
                if {"status", "events"} <= set(seen):
                    break
        status = seen["status"]
        assert isinstance(status, dict)
        assert status["served_by"] == "n1" and status["member"] is True and status["stale"] is False
        assert status["status"]["groups"][0]["node"] == "n1"
        assert status["group_nodes"] == {"webotx1": ["n1"]}
        assert any(e["kind"] == "node_up" for e in seen["events"])  # type: ignore[union-attr]

        token_file = c.dir / "api.token"
        token_file.write_text("rotated-token\n")  # mode stays 0600
        with client(c, "n1") as old, client(c, "n1", token="rotated-token") as new:
            assert old.get("/cluster").status_code == 401
            assert new.get("/cluster").status_code == 200
        token_file.chmod(0o644)
        with client(c, "n1", token="rotated-token") as new:
            r = new.get("/cluster")
            assert r.status_code == 503 and "readable by group or others" in r.json()["detail"]
            assert httpx.get(c.api_url("n1") + "/health").status_code == 200
    finally:
        c.close()


def test_store_lost_health_says_503_and_reads_say_why(tmp_path: Path) -> None:
    import sqlite3

    c = LocalCluster(tmp_path / "c", nodes=("n1",), api_token=TOKEN)
    try:
        c.start_all()
        c.wait_group("webotx1", "online", "n1")
        wait_api(c, "n1")
        holder = sqlite3.connect(c.dir / "store.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # nobody can read or write the store
        try:
            with client(c, "n1") as http:
                deadline = time.monotonic() + 5
                while (r := http.get("/health")).status_code != 503:
                    assert time.monotonic() < deadline, "still healthy without the store"
                    time.sleep(0.05)
                assert r.json()["member"] is False and r.json()["reason"]
                assert http.get("/groups/webotx1/primary").status_code == 503
                r = http.get("/cluster")
                assert r.status_code == 503 and r.json()["detail"].startswith("cannot reach the cluster store")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        c.wait_group("webotx1", "online", "n1", timeout=10)
        with client(c, "n1") as http:
            deadline = time.monotonic() + 5
            while http.get("/groups/webotx1/primary").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert http.get("/health").status_code == 200
    finally:
        c.close()
