"""The domain's request-serving path does what raw uvicorn does, plus a cheap access log (issue 12 item 2).

Structure, never timing: the app server's uvicorn options are uvicorn's defaults except the ones
the domain owns (named here), the app is served unwrapped on the event loop and HTTP
implementation ``uvicorn app`` would use, and the access log is written in batches with the
same lines as before. The throughput figure itself is ``bench/domain_bench.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import re
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kagemusha.domains import NodeRegistry, start_domain, stop_domain
from kagemusha.domains._accesslog import AccessLogFormatter, BufferedRotatingFileHandler
from kagemusha.domains._appserver import create_app, loop_factory, server_config, uvicorn_log_config

from .conftest import APPS, Node

# The uvicorn options a domain sets on purpose; every other one stays uvicorn's default.
DOMAIN_OWNED = {
    "proxy_headers": False,  # the domain is the endpoint of its VIP: no X-Forwarded-* rewriting
    "server_header": False,
}
ACCESS_LINE = re.compile(
    r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \[\d+\] uvicorn\.access: 127\.0\.0\.1:\d+ - "GET /x\?y=1 HTTP/1\.1" 200$'
)


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app (a module-level coroutine function: what ``uvicorn mod:hello`` would load)."""


def _options(config: uvicorn.Config) -> dict[str, Any]:
    return {k: v for k, v in vars(config).items() if k != "app"}


def test_app_server_options_are_uvicorns_defaults_but_the_domains_own() -> None:
    domain = _options(server_config(hello, access_log=True))
    # NB: log_config=None on both: the domain sets up its own logging (logs/server.log, logs/access.log);
    # uvicorn's default would reconfigure this process's logging
    raw = _options(uvicorn.Config(hello, log_config=None))
    assert domain["log_config"] is None
    differ = {k for k in raw.keys() | domain.keys() if raw.get(k) != domain.get(k)}
    assert differ == set(DOMAIN_OWNED), differ
    assert {k: domain[k] for k in DOMAIN_OWNED} == DOMAIN_OWNED
    assert domain["http"] == raw["http"] == "auto" and domain["loop"] == raw["loop"] == "auto"
    # a second listener (https) differs only in TLS and in not running the app's lifespan again
    https = _options(server_config(hello, access_log=True, first=False, tls=("c.pem", "k.pem")))
    assert {k for k in domain if domain[k] != https[k]} == {"lifespan", "ssl_certfile", "ssl_keyfile"}
    assert https["lifespan"] == "off"


def test_app_is_served_unwrapped_with_the_same_protocol_and_loop_as_raw_uvicorn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAGEMUSHA_DOMAIN", raising=False)  # no domain: no data sources to wrap the app in
    monkeypatch.setenv("KAGEMUSHA_DOMAIN_APP", "hello_asgi:app")
    monkeypatch.setenv("KAGEMUSHA_DOMAIN_APP_PATH", str(APPS / "hello"))
    app = create_app()
    import hello_asgi  # type: ignore[import-not-found]

    assert app is hello_asgi.app  # no middleware of the domain around the app
    domain, raw = server_config(app, access_log=False), uvicorn.Config(app, log_config=None)
    domain.load()
    raw.load()
    assert domain.loaded_app is app  # nothing uvicorn adds either (raw uvicorn: its proxy-headers middleware)
    assert domain.http_protocol_class is raw.http_protocol_class
    assert loop_factory() == raw.get_loop_factory()


@pytest.fixture
def access_logger(tmp_path: Path) -> Iterator[logging.Logger]:
    """``uvicorn.access`` configured as the app server configures it, restored afterwards."""
    logger = logging.getLogger("uvicorn.access")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logging.config.dictConfig(uvicorn_log_config(tmp_path, access_log=True))
    try:
        yield logger
    finally:
        for h in logger.handlers:
            if isinstance(h, BufferedRotatingFileHandler):
                h.close()
        logger.handlers[:], logger.level, logger.propagate = saved
        for name in ("uvicorn", ""):
            for h in logging.getLogger(name).handlers[:]:
                if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == tmp_path:
                    logging.getLogger(name).removeHandler(h)
                    h.close()


def _log_requests(logger: logging.Logger, n: int) -> None:
    for i in range(n):
        logger.info('%s - "%s %s HTTP/%s" %d', f"127.0.0.1:{40000 + i}", "GET", "/x?y=1", "1.1", 200)


def test_access_log_is_written_in_batches_on_the_loop(access_logger: logging.Logger, tmp_path: Path) -> None:
    """Before: one write (and two stats, a seek and a tell) per request; now: nothing until the batch."""
    (handler,) = [
        h for h in access_logger.handlers if isinstance(h, logging.FileHandler | BufferedRotatingFileHandler)
    ]
    assert isinstance(handler, BufferedRotatingFileHandler)
    assert isinstance(handler.formatter, AccessLogFormatter)
    handler.flush_interval = 0.05
    log = tmp_path / "access.log"

    async def serve_some() -> list[str]:
        _log_requests(access_logger, 100)
        assert log.read_text() == ""  # buffered, not written per request
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and log.stat().st_size == 0:  # the loop's timer writes it
            await asyncio.sleep(0.01)
        return log.read_text().splitlines()

    lines = asyncio.run(serve_some())
    assert len(lines) == 100 and all(ACCESS_LINE.match(line) for line in lines), lines[:2]


def test_access_log_flushes_when_full_without_loop_and_at_shutdown(
    access_logger: logging.Logger, tmp_path: Path
) -> None:
    (handler,) = [
        h for h in access_logger.handlers if isinstance(h, logging.FileHandler | BufferedRotatingFileHandler)
    ]
    assert isinstance(handler, BufferedRotatingFileHandler)
    log = tmp_path / "access.log"
    _log_requests(access_logger, 3)  # no running loop (a record from another thread): written at once
    assert len(log.read_text().splitlines()) == 3

    async def fill() -> None:
        handler.flush_interval = 3600.0  # only the size or the shutdown can write it
        handler.max_buffer = 1000
        _log_requests(access_logger, 5)
        assert len(log.read_text().splitlines()) == 3
        _log_requests(access_logger, 10)  # past 1000 bytes: written
        assert len(log.read_text().splitlines()) >= 13
        _log_requests(access_logger, 1)

    asyncio.run(fill())
    logging.shutdown([weakref.ref(handler)])  # what exit_now runs when the app server (or a worker) stops
    assert len(log.read_text().splitlines()) == 19


def test_access_log_line_is_the_standard_formatters() -> None:
    fmt, std = AccessLogFormatter(), logging.Formatter(AccessLogFormatter.FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0405, 1_700_003_600.5):
        record = logging.makeLogRecord(
            {"name": "uvicorn.access", "levelno": logging.INFO, "levelname": "INFO", "msg": "%s - %d",
             "args": ("a", 200), "created": created, "msecs": (created - int(created)) * 1000, "process": 7}
        )  # fmt: skip
        assert fmt.format(record) == std.format(record)


def test_access_log_rotates_and_follows_a_rotation_by_another_worker(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    h = BufferedRotatingFileHandler(str(path), maxBytes=500, backupCount=2)
    h.setFormatter(logging.Formatter("%(message)s"))
    try:
        for i in range(60):
            h.emit(logging.makeLogRecord({"msg": f"line {i:03d} " + "x" * 40}))  # no loop: one write each
        files = [path, path.with_name("access.log.1"), path.with_name("access.log.2")]
        assert all(f.exists() for f in files) and not path.with_name("access.log.3").exists()
        for f in files:
            text = f.read_text()
            assert len(text) <= 500 and text.endswith("\n")  # whole lines, never past maxBytes
            assert all(line.startswith("line ") for line in text.splitlines())
        assert path.read_text().splitlines()[-1].startswith("line 059")
        os.replace(path, tmp_path / "moved.log")  # another worker rotated it
        h.emit(logging.makeLogRecord({"msg": "after"}))
        assert path.read_text() == "after\n"
    finally:
        h.close()


@pytest.mark.timeout(240)
def test_running_domain_logs_requests_once_it_stops(node: Node, workdir: Path) -> None:
    """End to end: requests served by a domain are in access.log, in the same format, after a stop."""
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    node.run("deploy", "domain1", "hello_asgi:app", "--path", str(APPS / "hello"), check=True)
    reg = NodeRegistry(node.registry)
    start_domain("domain1", registry=reg)
    try:
        with httpx.Client() as c:
            for _ in range(5):
                assert c.get("http://127.0.0.1:10080/x?y=1").text.startswith("hello from asgi")
    finally:
        stop_domain("domain1", wait_timeout=60, registry=reg)
    lines = (root / "domain1" / "logs" / "access.log").read_text().splitlines()
    ours = [line for line in lines if ACCESS_LINE.match(line)]
    assert len(ours) == 5, lines  # (and the start's own readiness probe, GET /)
