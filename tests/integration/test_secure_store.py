"""Agents, their APIs, the web UI's API calls and the CLI on an etcd with client TLS and auth.

The test makes a throwaway CA with a server and a client certificate (``make_test_pki``), runs etcd
with ``--client-cert-auth`` and auth enabled (user ``root``, password in a 0600 file), and points a
two-node cluster at it with ``store_ca_file``/``store_cert_file``/``store_key_file``/``store_user``/
``store_password_file``. Everything that opens the store must use those options: the agents, each
agent's API (reads and actions), and the CLI (through the API, and on the store directly for
``config show``). A client without them is refused by etcd.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kagemusha.testing.etcd import EtcdCluster, make_test_pki, require_etcd
from tests.api.conftest import TOKEN, client, wait_api
from tests.integration.cluster import LocalCluster

PASSWORD = "r00t-etcd-pw"


@pytest.fixture()
def secure_etcd(tmp_path: Path) -> Iterator[tuple[EtcdCluster, dict[str, str]]]:
    require_etcd()
    pki = make_test_pki(tmp_path / "pki", client_subject="/O=kagemusha")  # no CN: see make_test_pki
    pw = tmp_path / "etcd-password"
    pw.touch(mode=0o600)
    pw.write_text(PASSWORD + "\n")
    with EtcdCluster(1, tls=pki) as etcd:
        etcd.etcdctl("user", "add", "root", f"--new-user-password={PASSWORD}")
        etcd.etcdctl("auth", "enable")
        yield etcd, {"store": etcd.endpoints, "store_ca_file": pki.ca_file, "store_cert_file": pki.client_cert_file,
                     "store_key_file": pki.client_key_file, "store_user": "root", "store_password_file": str(pw),
                     # TLS handshake + authenticate on the first request: 0.3-0.7 s here, more under load
                     "heartbeat_interval": 0.5, "store_timeout": 2.0, "fence_margin": 0.5, "heartbeat_timeout": 6.0}


def cli(c: LocalCluster, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kagemusha", *args, "--config", str(config or c.config_path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_everything_works_on_a_secured_etcd(tmp_path: Path, secure_etcd: tuple[EtcdCluster, dict[str, str]]) -> None:
    _, store = secure_etcd
    c = LocalCluster(tmp_path / "c", api_token=TOKEN, cluster=dict(store))
    try:
        c.start_all()
        c.wait_group("webotx1", "online", "n1", timeout=30)  # the agents (and this test's control client)
        for n in c.nodes:
            wait_api(c, n, timeout=30)
        # the API's own store client: reads and an action
        with client(c, "n2") as http:
            r = http.get("/cluster")
            assert r.status_code == 200, r.text
            assert [g["name"] for g in r.json()["groups"]] == ["webotx1"]
            assert http.get("/events").status_code == 200
            r = http.post("/groups/webotx1/move", json={"to": "n2", "wait": 30})
            assert r.status_code == 200, r.text
            # the web UI's live stream (what index.html reads with fetch)
            with http.stream("GET", "/live", timeout=10) as live:
                for line in live.iter_lines():
                    if line.startswith("event: status"):
                        break
        c.wait_group("webotx1", "online", "n2", timeout=30)
        # the CLI: through the API (status, group move) and on the store itself (config show)
        r = cli(c, "status", "--json")
        assert r.returncode == 0, r.stderr
        r = cli(c, "group", "move", "webotx1", "--to", "n1", "--wait", "30")
        assert r.returncode == 0, r.stderr
        r = cli(c, "config", "show")
        assert r.returncode == 0 and "config version" in r.stdout, r.stdout + r.stderr
        assert PASSWORD not in r.stdout + r.stderr
        # a client without the certificate and the password is refused by etcd
        bare = c.dir / "bare.toml"  # beside cluster.toml: its scripts resolve
        text = c.config_path.read_text()
        for key in ("store_cert_file", "store_key_file", "store_user", "store_password_file"):
            text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(key))
        bare.write_text(text.replace("[cluster]", "[cluster]\ninsecure_store = true") + "\n")
        r = cli(c, "config", "show", config=bare)
        assert r.returncode == 1 and "cannot reach the cluster store" in r.stderr, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
    finally:
        c.close()
    c.assert_no_overlap()


def test_agent_refuses_an_open_etcd(tmp_path: Path) -> None:
    """No client certificate, no auth, no ``insecure_store``: the agent does not start (exit 2, says why)."""
    c = LocalCluster(tmp_path / "c", nodes=("n1",), cluster={"store": "etcd://127.0.0.1:2379", "insecure_store": True})
    text = c.config_path.read_text().replace("insecure_store = true\n", "")
    c.config_path.write_text(text)
    r = subprocess.run([sys.executable, "-m", "kagemusha", "agent", "--config", str(c.config_path), "--node", "n1"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert "cluster.store" in r.stderr and "root on every node" in r.stderr and "insecure_store" in r.stderr
