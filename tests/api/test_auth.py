"""Every endpoint but the health ones needs the token; refusals are 401, logged without the token, no traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kagemusha.config import load_config
from kagemusha.errors import ConfigError
from tests.api.conftest import TOKEN, client
from tests.integration.cluster import LocalCluster

PROTECTED = [
    ("GET", "/cluster"), ("GET", "/events"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/live"),
    ("POST", "/groups/webotx1/move"), ("POST", "/groups/webotx1/start"), ("POST", "/groups/webotx1/stop"),
    ("POST", "/groups/webotx1/monitors/svcmon/suspend"), ("POST", "/nodes/n2/standby"),
]


@pytest.mark.parametrize("token", [None, "wrong-token-value", ""], ids=["missing", "wrong", "empty"])
def test_protected_endpoints_refuse_without_the_right_token(shared_cluster: LocalCluster, token: str | None) -> None:
    with client(shared_cluster, "n1", token=token) as http:
        for method, path in PROTECTED:
            r = http.request(method, path, json={"to": "n2"} if method == "POST" else None)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["detail"].startswith("unauthorized: ")
            assert "Traceback" not in r.text and TOKEN not in r.text
    st = shared_cluster.group_status("webotx1")
    assert (st["state"], st["node"]) == ("online", "n1"), "a refused action changed nothing"


def test_other_schemes_are_refused(shared_cluster: LocalCluster) -> None:
    with client(shared_cluster, "n1", token=None) as http:
        r = http.get("/cluster", headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401 and r.json()["detail"] == "unauthorized: not a bearer token"
        r = http.get("/cluster", headers={"Authorization": f"bearer {TOKEN}"})
        assert r.status_code == 200, "the scheme is case-insensitive"


def test_rejections_are_logged_without_the_token(shared_cluster: LocalCluster) -> None:
    secret_guess = "guess-8d1e77-never-logged"
    with client(shared_cluster, "n2", token=secret_guess) as http:
        assert http.get("/events").status_code == 401
    deadline = time.monotonic() + 5
    while True:  # the agent logs through a queue: the line may land just after the answer
        log = shared_cluster.log("n2")
        lines = [ln for ln in log.splitlines() if "api request rejected" in ln]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any('"reason": "wrong token"' in ln and '"path": "/events"' in ln and '"client": "127.0.0.1"' in ln
               for ln in lines), lines
    assert secret_guess not in log and TOKEN not in log
    assert "Traceback" not in log


def test_health_endpoints_need_no_token(shared_cluster: LocalCluster) -> None:
    with client(shared_cluster, "n1", token=None) as h1, client(shared_cluster, "n2", token=None) as h2:
        assert h1.get("/health").json() == {"node": "n1", "member": True}
        assert h2.head("/health").status_code == 200
        assert h1.get("/groups/webotx1/primary").status_code == 200
        assert h2.get("/groups/webotx1/primary").status_code == 503
        assert h2.head("/groups/webotx1/primary").status_code == 503
        assert h1.get("/groups/nosuch/primary").status_code == 404
        ui = h1.get("/")
        assert ui.status_code == 200 and "<title>kagemusha</title>" in ui.text, "the UI's shell is static, no data"
        assert ui.headers["content-security-policy"].startswith("default-src 'self'")


def test_openapi_schema_with_the_token(shared_cluster: LocalCluster) -> None:
    with client(shared_cluster, "n1") as http:
        r = http.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    for path in ("/cluster", "/events", "/live", "/metrics", "/groups/{group}/move", "/groups/{group}/start",
                 "/groups/{group}/stop", "/groups/{group}/monitors/{monitor}/suspend",
                 "/groups/{group}/monitors/{monitor}/resume", "/nodes/{node}/standby", "/nodes/{node}/unstandby",
                 "/health", "/groups/{group}/primary"):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "to" in schema["components"]["schemas"]["MoveBody"]["required"]


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token = tmp_path / "api.token"
    token.write_text("abc\n")
    token.chmod(0o644)
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(f'[cluster]\nname = "t"\nstore = "local:{tmp_path}/s.db"\napi_token_file = "api.token"\n'
                   '[[nodes]]\nname = "n1"\naddress = "127.0.0.1:7701"\n')
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    (loc, msg), = ei.value.errors
    assert loc.endswith("cluster.api_token_file") and "0644" in msg and "chmod 600" in msg
    token.chmod(0o600)
    assert load_config(cfg).cluster.api_token_file == "api.token"
    token.write_text("  \n")
    with pytest.raises(ConfigError, match="cluster.api_token_file: .* is empty"):
        load_config(cfg)
