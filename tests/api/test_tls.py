"""With ``tls_cert_file``/``tls_key_file`` the API serves HTTPS only, and the CLI trusts that certificate."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import TOKEN
from tests.integration.cluster import LocalCluster


def make_cert(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    key.chmod(0o600)
    return cert, key


def test_https_api_and_cli(tmp_path: Path, make_cluster: Callable[..., LocalCluster]) -> None:
    assert shutil.which("openssl"), "openssl is needed to make a test certificate"
    cert, key = make_cert(tmp_path, "kagemusha-test")
    c = make_cluster(nodes=("n1",), cluster={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    url = c.api_url("n1")
    assert url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(cert))
    r = httpx.get(url + "/cluster", headers={"Authorization": f"Bearer {TOKEN}"}, verify=ctx)
    assert r.status_code == 200 and r.json()["groups"][0]["node"] == "n1"
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/health", timeout=2)
    r = c.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["nodes"][0]["state"] == "up"
    # a CLI that trusts another certificate refuses to talk (and says why), then reads the store instead
    other, _ = make_cert(tmp_path, "someone-else")
    cfg = c.dir / "other.toml"
    cfg.write_text(c.config_path.read_text().replace(str(cert), str(other)).replace(str(key), str(_)))
    r = subprocess.run([sys.executable, "-m", "kagemusha", "status", "--json", "--config", str(cfg)], check=False,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "TLS certificate not trusted" in r.stderr, r.stderr
    assert "reading the cluster store directly" in r.stderr and "Traceback" not in r.stderr
