"""Domain start time and requests/s through a domain versus the same app under raw uvicorn.

    .venv/bin/python bench/domain_bench.py [--requests 3000] [--concurrency 16] [--starts 3]

Everything runs on loopback (the client only talks to 127.0.0.1), in a temporary registry, on
free ports; every loop is bounded. It prints figures and ratios and never fails on time: a
benchmark informs, tests decide.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "tests" / "data" / "domains" / "hello"
sys.path.insert(0, str(ROOT / "src"))

from kagemusha.domains import (
    NodeRegistry,
    create_domain,
    deploy_app,
    kill_domain,
    start_domain,
    stop_domain,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_answers(port: int, *, limit: float = 30.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
            return True
        time.sleep(0.01)
    return False


async def _worker(port: int, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def load(port: int, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, median latency in ms) for ``requests`` keep-alive GETs."""
    latencies: list[float] = []
    per = max(1, requests // concurrency)

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(_worker(port, per, latencies) for _ in range(concurrency)))
        return time.perf_counter() - t0

    elapsed = asyncio.run(run())
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def raw_uvicorn(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "hello_asgi:app", "--app-dir", str(HELLO),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def stop_raw(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: only its processes
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds (best is kept)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="km-bench-") as tmp:
        base = Path(tmp)
        reg = NodeRegistry(base / "registry")
        http, admin, naming = free_port(), free_port(), free_port()
        props = base / "bench.properties"
        props.write_text(
            "domain.name=bench\ndomain.admin.user=admin\n"
            f"domain.admin.port={admin}\ndomain.http.port={http}\n"
            f"server.corba-service.namesv.NameServicePort={naming}\ndomain.access.log=false\n"
        )
        create_domain(
            "bench", props, domaindir=base / "domains", admin_password="bench-pw",
            admin_port=free_port(), registry=reg,
        )  # fmt: skip
        deploy_app("bench", "hello_asgi:app", path=HELLO, registry=reg)

        try:
            domain_starts = []
            for _ in range(args.starts):
                t0 = time.perf_counter()
                start_domain("bench", registry=reg)
                domain_starts.append(time.perf_counter() - t0)
                stop_domain("bench", force=True, wait_timeout=10, registry=reg)
            raw_starts = []
            raw_port = free_port()
            for _ in range(args.starts):
                t0 = time.perf_counter()
                proc = raw_uvicorn(raw_port)
                ok = wait_answers(raw_port)
                raw_starts.append(time.perf_counter() - t0)
                stop_raw(proc)
                if not ok:
                    print("raw uvicorn did not answer; start figure is a lower bound")

            # Interleaved rounds (domain, raw, domain, raw): background load hits both alike.
            dom_runs: list[tuple[float, float]] = []
            raw_runs: list[tuple[float, float]] = []
            for _ in range(args.rounds):
                start_domain("bench", registry=reg)
                try:
                    load(http, min(300, args.requests), args.concurrency)  # warm-up
                    dom_runs.append(load(http, args.requests, args.concurrency))
                finally:
                    stop_domain("bench", force=True, wait_timeout=10, registry=reg)
                proc = raw_uvicorn(raw_port)
                try:
                    wait_answers(raw_port)
                    load(raw_port, min(300, args.requests), args.concurrency)
                    raw_runs.append(load(raw_port, args.requests, args.concurrency))
                finally:
                    stop_raw(proc)
            dom_rps, dom_lat = max(dom_runs)
            raw_rps, raw_lat = max(raw_runs)
        finally:
            with contextlib.suppress(Exception):
                kill_domain("bench", registry=reg)

    ds, rs = statistics.median(domain_starts), statistics.median(raw_starts)
    print(f"start time (median of {args.starts}): domain {ds * 1000:.0f} ms, raw uvicorn {rs * 1000:.0f} ms,"
          f" ratio domain/raw {ds / rs:.2f}")  # fmt: skip
    print(f"throughput (best of {args.rounds}, {args.requests} keep-alive GETs, {args.concurrency} connections):"
          f" domain {dom_rps:.0f} req/s ({dom_lat:.2f} ms median),"
          f" raw uvicorn {raw_rps:.0f} req/s ({raw_lat:.2f} ms median), ratio domain/raw {dom_rps / raw_rps:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
