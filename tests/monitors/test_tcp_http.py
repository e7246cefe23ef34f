"""tcp and http monitors against local servers on 127.0.0.1 (no root needed)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
from pydantic import ValidationError

from kagemusha.monitors import MonitorContext, monitor_class
from kagemusha.monitors.http import HttpMonitor, HttpMonitorParams
from kagemusha.monitors.tcp import TcpMonitor, TcpMonitorParams

CTX = MonitorContext("c", "g", "m", "n", Path("/nonexistent"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path == "/down" else 200
        body = b"service ok" if status == 200 else b"nope"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_registered() -> None:
    assert monitor_class("tcp") is TcpMonitor and monitor_class("http") is HttpMonitor


def test_tcp(server: int) -> None:
    ok = asyncio.run(TcpMonitor(TcpMonitorParams(host="127.0.0.1", port=server), CTX).check())
    assert ok.ok, ok.detail
    bad = asyncio.run(TcpMonitor(TcpMonitorParams(host="127.0.0.1", port=free_port()), CTX).check())
    assert not bad.ok and "cannot connect to 127.0.0.1" in bad.detail
    with pytest.raises(ValidationError):
        TcpMonitorParams(host="x", port=0)


def http(url: str, **kw: object) -> tuple[bool, str]:
    r = asyncio.run(HttpMonitor(HttpMonitorParams.model_validate({"url": url, **kw}), CTX).check())
    return r.ok, r.detail


def test_http(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    base = f"http://127.0.0.1:{server}"
    # A proxy in the environment is ignored: the monitor asks the service itself.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert http(f"{base}/") == (True, f"GET {base}/: 200")
    ok, detail = http(f"{base}/down")
    assert not ok and "status 503, expected 200" in detail
    assert http(f"{base}/down", expected_status=503)[0]
    assert http(f"{base}/", contains="ok")[0]
    ok, detail = http(f"{base}/", contains="banana")
    assert not ok and "lacks 'banana'" in detail
    ok, detail = http(f"http://127.0.0.1:{free_port()}/")
    assert not ok and "ConnectError" in detail
    for bad in ("ftp://x/", "http:///nohost", "not a url"):
        with pytest.raises(ValidationError):
            HttpMonitorParams(url=bad)


def test_a_hanging_server_is_bounded_by_the_callers_timeout() -> None:
    async def main() -> None:
        srv = await asyncio.start_server(lambda r, w: asyncio.sleep(3600), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        mon = HttpMonitor(HttpMonitorParams(url=f"http://127.0.0.1:{port}/"), CTX)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await mon.check()
        srv.close()

    asyncio.run(main())
