"""Bad requests get 422 naming the field (or 404 naming what does not exist); nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import client
from tests.integration.cluster import LocalCluster


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/groups/webotx1/move", {}, "to", "Field required"),
        ("/groups/webotx1/move", {"to": "n9"}, "to", 'no node "n9"'),
        ("/groups/webotx1/move", {"to": "n2", "wait": -1}, "wait", "greater than or equal to 0"),
        ("/groups/webotx1/move", {"to": "n2", "wait": "soon"}, "wait", "valid number"),
        ("/groups/webotx1/move", {"to": "n2", "force": True}, "force", "Extra inputs"),
        ("/groups/webotx1/start", {"node": "n7"}, "node", 'no node "n7"'),
        ("/groups/webotx1/stop", {"wait": 99999}, "wait", "less than or equal to 3600"),
        ("/nodes/n2/standby", {"wait": []}, "wait", "valid number"),
    ],
)
def test_422_names_the_field(shared_cluster: LocalCluster, path: str, body: dict[str, Any], field: str,
                             words: str) -> None:
    with client(shared_cluster, "n1") as http:
        r = http.post(path, json=body)
    assert r.status_code == 422, r.text
    data = r.json()
    assert field in [e["field"] for e in data["errors"]], data
    assert data["detail"].startswith(f"{field}: ") or f"; {field}: " in data["detail"]
    assert words in data["detail"], data
    assert "Traceback" not in r.text
    st = shared_cluster.group_status("webotx1")
    assert (st["state"], st["node"]) == ("online", "n1")


def test_malformed_json_is_422(shared_cluster: LocalCluster) -> None:
    with client(shared_cluster, "n1") as http:
        r = http.post("/groups/webotx1/move", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/groups/nosuch/move", 'no group "nosuch"'),
        ("/groups/webotx1/monitors/nomon/suspend", 'no monitor "nomon"'),
        ("/nodes/n9/standby", 'no node "n9"'),
    ],
)
def test_unknown_names_are_404(shared_cluster: LocalCluster, path: str, words: str) -> None:
    with client(shared_cluster, "n2") as http:
        r = http.post(path, json={"to": "n2"} if path.endswith("move") else None)
    assert r.status_code == 404 and words in r.json()["detail"], r.text


def test_events_limit_is_validated(shared_cluster: LocalCluster) -> None:
    with client(shared_cluster, "n1") as http:
        r = http.get("/events", params={"limit": 0})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limit"
        assert len(http.get("/events", params={"limit": 2}).json()["events"]) == 2
