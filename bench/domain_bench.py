"""Domain start/stop time and requests/s through a domain versus the same app under raw uvicorn.

    .venv/bin/python bench/domain_bench.py [--starts 10] [--requests 3000] [--concurrency 16]
                                           [--rounds 2] [--out bench/results/domain_bench.json]

Side by side in one run, interleaved (domain, raw, domain, raw, ...) so that background load
hits both alike:

- **start**: from the call to the app answering. ``domain (runtime)`` is ``start_domain()``
  called in this process (it returns once the app answers): the runtime's part, without the
  CLI's own import time. ``domain (CLI)`` is ``kagemusha domain start`` as a command, then the
  first answer. ``raw uvicorn`` is ``python -m uvicorn hello_asgi:app`` spawned, then polled
  every 2 ms until it answers (the poll interval makes the raw figure slightly pessimistic).
- **stop**: ``stop_domain()`` (graceful: SIGTERM, wait for every process) versus SIGTERM to raw
  uvicorn and waiting for it to exit.
- **throughput**: keep-alive GETs from ``--concurrency`` connections, best of ``--rounds``.

The target of issue 12 is printed next to the figures (domain start <= 1.2 x raw + 0.1 s,
requests >= 0.95 x raw); the benchmark never fails on time. The results file records commit,
date, machine (cores, kernel, Python), load average, N and the command. Everything runs on
loopback in a temporary registry on free ports; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "tests" / "data" / "domains" / "hello"
sys.path.insert(0, str(ROOT / "src"))
# NB: an installed package has its bytecode cached (raw uvicorn's is, in site-packages): with
# PYTHONDONTWRITEBYTECODE inherited, every domain process would compile kagemusha from source.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(
    os.pathsep
)  # the domain's own processes run this checkout too

from kagemusha.domains import (
    NodeRegistry,
    create_domain,
    deploy_app,
    kill_domain,
    start_domain,
    stop_domain,
)

KAGEMUSHA = str(Path(sys.executable).parent / "kagemusha")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1")
    except OSError:
        return False


def wait_answers(port: int, *, limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if answers(port):
            return True
        time.sleep(0.002)
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
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def summary(values: list[float]) -> dict[str, float]:
    """min / median / max in ms (N is small: no percentiles pretending otherwise)."""
    return {
        "min_ms": round(min(values) * 1000, 1),
        "median_ms": round(statistics.median(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--starts", type=int, default=10, help="start/stop cycles of each kind (N)")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds (best is kept)")
    ap.add_argument("--no-cli", action="store_true", help="skip the `kagemusha domain start` command figure")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    meta = machine()

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
        env = dict(os.environ, KAGEMUSHA_DOMAIN_REGISTRY=str(reg.path))
        raw_port = free_port()
        starts: dict[str, list[float]] = {"domain": [], "domain_cli": [], "raw": []}
        stops: dict[str, list[float]] = {"domain": [], "raw": []}
        try:
            for _ in range(args.starts):
                t0 = time.perf_counter()
                start_domain("bench", registry=reg)
                starts["domain"].append(time.perf_counter() - t0)
                assert answers(http)
                t0 = time.perf_counter()
                stop_domain("bench", wait_timeout=30, registry=reg)
                stops["domain"].append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                proc = raw_uvicorn(raw_port)
                if not wait_answers(raw_port):
                    print("raw uvicorn did not answer; its start figure is a lower bound")
                starts["raw"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                stop_raw(proc)
                stops["raw"].append(time.perf_counter() - t0)

                if not args.no_cli:
                    t0 = time.perf_counter()
                    subprocess.run([KAGEMUSHA, "domain", "start", "bench"], env=env, check=True,
                                   stdout=subprocess.DEVNULL)  # fmt: skip
                    wait_answers(http)
                    starts["domain_cli"].append(time.perf_counter() - t0)
                    stop_domain("bench", wait_timeout=30, registry=reg)

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

    ds, rs = statistics.median(starts["domain"]), statistics.median(starts["raw"])
    target = 1.2 * rs + 0.1
    dstop, rstop = statistics.median(stops["domain"]), statistics.median(stops["raw"])
    n = args.starts
    print(f"start, median of {n}: domain (runtime) {ds * 1000:.0f} ms, raw uvicorn {rs * 1000:.0f} ms,"
          f" ratio {ds / rs:.2f}; target 1.2 x raw + 0.1 s = {target * 1000:.0f} ms:"
          f" {'met' if ds <= target else f'missed by {(ds - target) * 1000:.0f} ms'}")  # fmt: skip
    if starts["domain_cli"]:
        dc = statistics.median(starts["domain_cli"])
        print(
            f"start through `kagemusha domain start` (CLI import included), median of {n}: {dc * 1000:.0f} ms,"
            f" ratio {dc / rs:.2f} to raw uvicorn; target 1.2 x raw + 0.1 s = {target * 1000:.0f} ms:"
            f" {'met' if dc <= target else f'missed by {(dc - target) * 1000:.0f} ms'}"
        )
    print(f"stop, median of {n}: domain {dstop * 1000:.0f} ms, raw uvicorn {rstop * 1000:.0f} ms,"
          f" ratio {dstop / rstop:.2f}")  # fmt: skip
    print(f"throughput (best of {args.rounds}, {args.requests} keep-alive GETs, {args.concurrency} connections):"
          f" domain {dom_rps:.0f} req/s ({dom_lat:.2f} ms median),"
          f" raw uvicorn {raw_rps:.0f} req/s ({raw_lat:.2f} ms median), ratio {dom_rps / raw_rps:.2f}"
          f" (target >= 0.95)")  # fmt: skip
    print(f"load average at start: {meta['load_average_at_start']} on {meta['cores']} cores")
    if args.out:
        result = {
            **meta,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "n_starts": n,
            "start": {
                "domain_runtime": summary(starts["domain"]),
                "domain_cli": summary(starts["domain_cli"]) if starts["domain_cli"] else None,
                "raw_uvicorn": summary(starts["raw"]),
                "ratio_median": round(ds / rs, 3),
                "target_ms": round(target * 1000, 1),
                "target_met": ds <= target,
                "cli_ratio_median": round(statistics.median(starts["domain_cli"]) / rs, 3) if starts["domain_cli"] else None,
                "cli_target_met": statistics.median(starts["domain_cli"]) <= target if starts["domain_cli"] else None,
            },
            "stop": {
                "domain": summary(stops["domain"]),
                "raw_uvicorn": summary(stops["raw"]),
                "ratio_median": round(dstop / rstop, 3),
            },
            "throughput": {
                "rounds": args.rounds,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "domain_rps": round(dom_rps),
                "raw_uvicorn_rps": round(raw_rps),
                "ratio": round(dom_rps / raw_rps, 3),
                "target_met": dom_rps >= 0.95 * raw_rps,
            },
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        # The shared record format (bench/_results.py): one part, "domain", with where it comes from.
        meta = {"commit": result.pop("commit", None), "dirty": result.pop("dirty", None), "date": result.pop("date", None),
                "machine": {"cores": result.pop("cores", None), "kernel": result.pop("kernel", None),
                            "python": result.pop("python", None),
                            "load_average_at_start": result.pop("load_average_at_start", None)},
                "n": result.get("n_starts"), "command": result.pop("command", None)}
        sys.path.insert(0, str(ROOT))
        from bench._results import stamp

        doc = stamp({"benchmark": args.out.stem, "parts": {"domain": {**result, "meta": meta}}})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
