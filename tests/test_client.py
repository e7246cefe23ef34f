"""kagemusha.client: lookup and call retry through an outage until their deadline, then one clear error.

Real HTTP servers on loopback (a thread each); the outage is a server that is not listening yet,
or one that answers 503 for a while. The end-to-end test across a real failover is
tests/e2e/test_client_failover.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kagemusha.client import call, lookup
from kagemusha.errors import DomainError, ServiceUnavailable

pytestmark = pytest.mark.timeout(60)


class Server:
    """A loopback HTTP server: answers ``status`` (503 first ``fail_first`` times), records requests."""

    def __init__(self, port: int = 0, *, fail_first: int = 0, drop_first: int = 0) -> None:
        self.requests: list[tuple[str, str]] = []
        self.fail_first = fail_first
        self.drop_first = drop_first
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                n = len(owner.requests)
                owner.requests.append((self.command, self.path))
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                if n < owner.drop_first:  # a broken exchange: the connection closes without an answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if n < owner.fail_first:
                    status, body = 503, b"starting"
                elif self.path.startswith("/names/"):
                    name = self.path[len("/names/") :]
                    if name == "missing":
                        status, body = 404, b'{"detail": "not bound"}'
                    else:
                        status = 200
                        body = json.dumps({"name": name, "url": f"http://vip:80/{name}"}).encode()
                else:
                    status, body = 200, f"{self.command} {self.path}".encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_call_and_lookup_answer_at_once_when_the_service_is_up(server: Server) -> None:
    r = call("GET", f"http://127.0.0.1:{server.port}/x")
    assert r.status_code == 200 and r.text == "GET /x"
    assert lookup("domain1", f"http://127.0.0.1:{server.port}") == "http://vip:80/domain1"
    assert lookup("domain1", f"corbaname://127.0.0.1:{server.port}") == "http://vip:80/domain1"
    assert lookup("a/b", f"http://127.0.0.1:{server.port}/names/") == "http://vip:80/a/b"


def test_call_waits_for_a_service_that_comes_up_later() -> None:
    port = _free_port()
    started: list[Server] = []
    up_at = time.monotonic() + 1.0

    def later() -> None:
        while time.monotonic() < up_at:
            time.sleep(0.01)
        started.append(Server(port))

    t = threading.Thread(target=later, daemon=True)
    t.start()
    try:
        r = call("PUT", f"http://127.0.0.1:{port}/kv/a", content=b"1", deadline=10)
        assert r.status_code == 200 and r.text == "PUT /kv/a"
        assert time.monotonic() >= up_at
        assert lookup("domain1", f"http://127.0.0.1:{port}", deadline=5) == "http://vip:80/domain1"
    finally:
        t.join(5)
        for s in started:
            s.close()


def test_post_is_retried_when_the_connection_was_refused() -> None:
    port = _free_port()
    started: list[Server] = []
    t = threading.Timer(0.5, lambda: started.append(Server(port)))
    t.start()
    try:
        r = call("POST", f"http://127.0.0.1:{port}/order", content=b"x", deadline=10)
        assert r.status_code == 200 and r.text == "POST /order"
        assert started[0].requests == [("POST", "/order")]  # sent once, when it could be
    finally:
        t.join()
        for s in started:
            s.close()


def test_503_is_retried_for_get_but_not_for_post() -> None:
    s = Server(fail_first=3)
    try:
        r = call("GET", f"http://127.0.0.1:{s.port}/", deadline=10)
        assert r.status_code == 200 and len(s.requests) == 4
        s.requests.clear()
        r = call("POST", f"http://127.0.0.1:{s.port}/", deadline=10)
        assert r.status_code == 503 and len(s.requests) == 1
    finally:
        s.close()


def test_a_broken_exchange_is_retried_only_for_idempotent_methods() -> None:
    s = Server(drop_first=1)
    try:
        assert call("DELETE", f"http://127.0.0.1:{s.port}/k", deadline=10).status_code == 200
        assert len(s.requests) == 2
        s.requests.clear()
        s.drop_first = 1
        with pytest.raises(ServiceUnavailable, match="not repeated: POST is not idempotent"):
            call("POST", f"http://127.0.0.1:{s.port}/k", content=b"x", deadline=10)
        assert len(s.requests) == 1
        s.requests.clear()
        s.drop_first = 1
        r = call("POST", f"http://127.0.0.1:{s.port}/k", content=b"x", deadline=10, retry_unsafe=True)
        assert r.status_code == 200 and len(s.requests) == 2
    finally:
        s.close()


def test_one_clear_error_after_the_deadline() -> None:
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailable) as exc:
        call("GET", f"http://127.0.0.1:{port}/", deadline=1.0)
    took = time.monotonic() - t0
    msg = str(exc.value)
    assert f"GET http://127.0.0.1:{port}/: no answer within the deadline of 1 s" in msg
    assert "attempts" in msg and "ConnectError" in msg and "\n" not in msg
    assert took < 3.0, took
    with pytest.raises(ServiceUnavailable, match="no answer within the deadline of 0.5 s"):
        lookup("domain1", f"http://127.0.0.1:{port}", deadline=0.5)


def test_the_deadline_bounds_the_attempts_on_a_virtual_clock() -> None:
    """Back-off doubles from 50 ms up to 1 s; no attempt starts after the deadline (no real waiting)."""
    now = [0.0]
    slept: list[float] = []

    def sleep(d: float) -> None:
        slept.append(d)
        now[0] += d

    port = _free_port()
    with pytest.raises(ServiceUnavailable):
        call("GET", f"http://127.0.0.1:{port}/", deadline=30, sleep=sleep, clock=lambda: now[0])
    assert now[0] <= 30
    assert slept[0] <= 0.05 and max(slept) <= 1.0
    assert 25 <= len(slept) <= 70, len(slept)


def test_a_name_that_is_not_bound_is_not_retried(server: Server) -> None:
    with pytest.raises(DomainError, match="name 'missing' is not bound") as exc:
        lookup("missing", f"http://127.0.0.1:{server.port}", deadline=10)
    assert not isinstance(exc.value, ServiceUnavailable)
    assert len(server.requests) == 1
    with pytest.raises(DomainError, match="not a naming service URL"):
        lookup("x", "ftp://h:1")
