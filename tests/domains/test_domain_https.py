"""HTTPS on ``domain.https.port``: a generated self-signed certificate, the operator's PEM files, HTTP off.

The client is the standard library's ``ssl``, verifying the certificate against the file the
domain serves (as a client that was given the certificate would), and the host name in it.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from kagemusha.domains._tls import generate_self_signed

from .conftest import Node

pytestmark = pytest.mark.timeout(240)  # includes waiting for PORTS_LOCK and CLI runs on a loaded machine

HTTPS = 10443  # the seed's 443, +10000


def _https_get(
    port: int, *, cafile: Path, server_hostname: str, host: str = "127.0.0.1"
) -> tuple[str, bytes]:
    """(negotiated TLS version, raw HTTP response) of ``GET /`` over a verified TLS connection."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return str(tls.version()), data


def test_generated_certificate_serves_https_beside_http(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root, domain_advertised_host="vip.test")
    cert, key = root / "domain1" / "config" / "https.crt", root / "domain1" / "config" / "https.key"
    assert cert.is_file() and key.stat().st_mode & 0o777 == 0o600
    node.run("start", "domain1", check=True)
    version, data = _https_get(HTTPS, cafile=cert, server_hostname="vip.test")
    assert version.startswith("TLSv1.") and data.startswith(b"HTTP/1.1 200") and b"domain1" in data
    with pytest.raises(ssl.SSLCertVerificationError):  # made for the advertised host, nothing else
        _https_get(HTTPS, cafile=cert, server_hostname="other.test")
    with socket.create_connection(("127.0.0.1", 10080), timeout=5) as s:  # plain HTTP too
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    node.run("stop", "domain1", check=True)

    # a new advertised host gets a new certificate at `set`
    node.run("set", "domain1", "domain.advertised.host=vip2.test", check=True)
    node.run("start", "domain1", check=True)
    assert _https_get(HTTPS, cafile=cert, server_hostname="vip2.test")[1].startswith(b"HTTP/1.1 200")
    node.run("stop", "domain1", check=True)


def test_given_certificate_key_0600_checked_and_http_off(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    mine = workdir / "tls"
    mine.mkdir()
    cert, key = mine / "server.pem", mine / "server.key"
    generate_self_signed("app.example.test", cert, key)
    key.chmod(0o644)
    r = node.run("set", "domain1", f"domain.https.cert={cert}", f"domain.https.key={key}")
    assert r.returncode == 1 and "domain.https.key" in r.stderr and "chmod 600" in r.stderr
    key.chmod(0o600)
    r = node.run("set", "domain1", f"domain.https.cert={cert}")
    assert r.returncode == 1 and "domain.https.key" in r.stderr  # the pair goes together
    r = node.run(
        "set", "domain1", f"domain.https.cert={cert}", f"domain.https.key={key}", "domain.http.port=0"
    )
    assert r.returncode == 0, r.stderr

    node.run("start", "domain1", check=True)  # ready: the app answered over HTTPS
    _, data = _https_get(HTTPS, cafile=cert, server_hostname="app.example.test")
    assert data.startswith(b"HTTP/1.1 200")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 10080), timeout=5)
    assert node.run("health", "domain1", "--password", "adminadmin").returncode == 0
    import httpx

    url = httpx.get("http://127.0.0.1:12809/names/domain1").json()["url"]
    assert url == f"https://127.0.0.1:{HTTPS}/"
    node.run("stop", "domain1", check=True)

    r = node.run("set", "domain1", "domain.https.port=0")
    assert r.returncode == 1 and "domain.http.port" in r.stderr and "nothing would serve" in r.stderr
    r = node.run("set", "domain1", "domain.https.cert=relative.pem")
    assert r.returncode == 1 and "absolute path" in r.stderr
