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
- **throughput**: keep-alive GETs from ``--concurrency`` connections (one client, in this
  process, for both sides). The domain and raw uvicorn run at the same time and are loaded in
  alternating bursts (domain first in even rounds, raw first in odd ones), ``--rounds`` pairs;
  the figure is the **median of the per-round ratios** (a burst pair lasts about a second, so
  both sides of a ratio see the same background load; a best-of-N would measure luck on a busy
  machine). Both sides run the same app with the same uvicorn options: uvicorn's default HTTP
  and loop implementations (recorded), no ``Server`` header, no proxy-header rewriting (the
  domain's settings; raw uvicorn is given ``--no-server-header --no-proxy-headers``). Two modes:
  ``access_log_off`` (the serving path alone: ``domain.access.log=false`` versus
  ``--no-access-log``) and ``access_log_on`` (each side's default: the domain's ``access.log``
  versus uvicorn's access log on stdout, redirected to a file). Next to requests/s, the server
  side's CPU per request (all processes of the server's session, from ``/proc/*/task/*/schedstat``)
  is recorded: it barely moves with background load, requests/s does. The 1-minute load average
  is recorded at every round.

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
sys.path.insert(0, str(ROOT))  # bench._results
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


# The domain's uvicorn options that differ from uvicorn's defaults (kagemusha.domains._appserver
# .server_config): raw uvicorn gets them too, so that both sides do the same work per request.
SAME_OPTIONS = ["--no-server-header", "--no-proxy-headers"]


def raw_uvicorn(port: int, *, access_log: bool = False, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``uvicorn hello_asgi:app``: quiet (the start figures), or with its default access log into ``log``."""
    log_opts = ["--log-level", "info"] if access_log else ["--log-level", "warning", "--no-access-log"]
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "hello_asgi:app", "--app-dir", str(HELLO),
             "--host", "127.0.0.1", "--port", str(port), *log_opts, *SAME_OPTIONS],
            stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def session_cpu(sid: int) -> float:
    """CPU seconds used so far by the live processes of session ``sid`` (every thread, ns resolution)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[3]) != sid:
                    continue
            for task in os.listdir(f"/proc/{entry}/task"):
                with open(f"/proc/{entry}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total / 1e9


def uvicorn_implementations() -> dict[str, str]:
    """What uvicorn's ``auto`` picks on this machine (both sides use it) and its version."""
    import importlib.metadata
    import importlib.util

    return {
        "uvicorn": importlib.metadata.version("uvicorn"),
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }


def throughput_mode(
    reg: NodeRegistry, domain: str, http: int, base: Path, *, access_log: bool, rounds: int, requests: int,
    concurrency: int,
) -> dict[str, Any]:
    """Domain ``domain`` and raw uvicorn up at once, loaded in alternating bursts; medians of the rounds."""
    raw_port = free_port()
    proc = raw_uvicorn(raw_port, access_log=access_log, log=base / f"raw-{domain}.log" if access_log else None)
    rows: list[dict[str, float]] = []
    try:
        start_domain(domain, registry=reg)
        master = json.loads((Path(reg.locate(domain).dir) / "state" / "state.json").read_text())["pid"]
        if not wait_answers(raw_port):
            raise SystemExit("raw uvicorn did not answer")
        sides = {"domain": (http, master), "raw": (raw_port, proc.pid)}  # port, session of the server
        for port, _ in sides.values():
            load(port, min(500, requests), concurrency)  # warm-up
        for i in range(rounds):
            row: dict[str, float] = {"load_1min": round(os.getloadavg()[0], 2)}
            for side in ("domain", "raw") if i % 2 == 0 else ("raw", "domain"):
                port, sid = sides[side]
                cpu0 = session_cpu(sid)
                rps, _lat = load(port, requests, concurrency)
                row[f"{side}_rps"] = rps
                row[f"{side}_cpu_us"] = (session_cpu(sid) - cpu0) / requests * 1e6
            rows.append(row)
            print(f"  round {i + 1}/{rounds} ({'access log' if access_log else 'no access log'}):"
                  f" domain {row['domain_rps']:.0f} req/s {row['domain_cpu_us']:.0f} us CPU/req,"
                  f" raw {row['raw_rps']:.0f} req/s {row['raw_cpu_us']:.0f} us CPU/req,"
                  f" ratio {row['domain_rps'] / row['raw_rps']:.2f}, load {row['load_1min']}", flush=True)  # fmt: skip
    finally:
        stop_domain(domain, force=True, wait_timeout=10, registry=reg)
        stop_raw(proc)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    ratio = statistics.median(r["domain_rps"] / r["raw_rps"] for r in rows)
    cpu_ratio = statistics.median(r["domain_cpu_us"] / r["raw_cpu_us"] for r in rows)
    loads = [r["load_1min"] for r in rows]
    return {
        "domain_rps": round(med("domain_rps")),
        "raw_uvicorn_rps": round(med("raw_rps")),
        "ratio": round(ratio, 3),
        "ratio_min": round(min(r["domain_rps"] / r["raw_rps"] for r in rows), 3),
        "ratio_max": round(max(r["domain_rps"] / r["raw_rps"] for r in rows), 3),
        "domain_cpu_us_per_request": round(med("domain_cpu_us"), 1),
        "raw_uvicorn_cpu_us_per_request": round(med("raw_cpu_us"), 1),
        "cpu_ratio": round(cpu_ratio, 3),
        "target_met": ratio >= 0.95,
        "load_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
        "per_round": [{k: round(v, 1) for k, v in r.items()} for r in rows],
    }


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
    from bench._results import commit

    code = commit()  # NB: the code only (src/, bench/): results written earlier in a session are not "dirty"
    return {
        "commit": code["sha"],
        "dirty": code["dirty"],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--starts", type=int, default=10, help="start/stop cycles of each kind (N)")
    ap.add_argument("--requests", type=int, default=1000, help="requests per burst (each side, each round)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=30,
                    help="interleaved throughput rounds per mode (the median of the per-round ratios is kept)")
    ap.add_argument("--modes", default="access_log_off,access_log_on",
                    help="throughput modes to run, comma-separated (access_log_off, access_log_on)")
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
        node_admin = free_port()  # the node's admin domain: one for both domains
        create_domain(
            "bench", props, domaindir=base / "domains", admin_password="bench-pw",
            admin_port=node_admin, registry=reg,
        )  # fmt: skip
        deploy_app("bench", "hello_asgi:app", path=HELLO, registry=reg)
        # The same domain with its default access log on (throughput mode access_log_on).
        http_log = free_port()
        props_log = base / "benchlog.properties"
        props_log.write_text(
            "domain.name=benchlog\ndomain.admin.user=admin\n"
            f"domain.admin.port={free_port()}\ndomain.http.port={http_log}\n"
            f"server.corba-service.namesv.NameServicePort={free_port()}\n"
        )
        create_domain(
            "benchlog", props_log, domaindir=base / "domains", admin_password="bench-pw",
            admin_port=node_admin, registry=reg,
        )  # fmt: skip
        deploy_app("benchlog", "hello_asgi:app", path=HELLO, registry=reg)
        env = dict(os.environ, KAGEMUSHA_DOMAIN_REGISTRY=str(reg.path))
        raw_port = free_port()
        starts: dict[str, list[float]] = {"domain": [], "domain_cli": [], "raw": []}
        stops: dict[str, list[float]] = {"domain": [], "raw": []}
        tput: dict[str, dict[str, Any]] = {}
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

            modes = [m.strip() for m in args.modes.split(",") if m.strip()]
            for mode in modes:
                if mode not in ("access_log_off", "access_log_on"):
                    raise SystemExit(f"--modes: unknown mode {mode!r} (access_log_off, access_log_on)")
                on = mode == "access_log_on"
                print(f"throughput, {mode}:", flush=True)
                tput[mode] = throughput_mode(
                    reg, "benchlog" if on else "bench", http_log if on else http, base, access_log=on,
                    rounds=args.rounds, requests=args.requests, concurrency=args.concurrency,
                )  # fmt: skip
        finally:
            with contextlib.suppress(Exception):
                kill_domain("bench", registry=reg)
            with contextlib.suppress(Exception):
                kill_domain("benchlog", registry=reg)

    n = args.starts
    if n:  # --starts 0: throughput only
        ds, rs = statistics.median(starts["domain"]), statistics.median(starts["raw"])
        target = 1.2 * rs + 0.1
        dstop, rstop = statistics.median(stops["domain"]), statistics.median(stops["raw"])
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
    for mode, t in tput.items():
        print(f"throughput, {mode} (median of {args.rounds} interleaved rounds of {args.requests} keep-alive GETs,"
              f" {args.concurrency} connections): domain {t['domain_rps']} req/s, raw uvicorn {t['raw_uvicorn_rps']}"
              f" req/s, ratio {t['ratio']:.2f} (rounds {t['ratio_min']:.2f}-{t['ratio_max']:.2f}; target >= 0.95:"
              f" {'met' if t['target_met'] else 'missed'}); server CPU per request: domain"
              f" {t['domain_cpu_us_per_request']} us, raw {t['raw_uvicorn_cpu_us_per_request']} us,"
              f" ratio {t['cpu_ratio']:.2f}; 1-min load {t['load_1min']}")  # fmt: skip
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
            }
            if n
            else None,
            "stop": {
                "domain": summary(stops["domain"]),
                "raw_uvicorn": summary(stops["raw"]),
                "ratio_median": round(dstop / rstop, 3),
            }
            if n
            else None,
            "throughput": {
                "method": "both servers up at once, alternating bursts, median of per-round ratios",
                "rounds": args.rounds,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "uvicorn": uvicorn_implementations(),
                "same_options": SAME_OPTIONS,
                **tput,
                "target_met": bool(tput) and all(t["target_met"] for t in tput.values()),
            },
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        # The shared record format (bench/_results.py): one part, "domain", with where it comes from.
        meta = {"commit": result.pop("commit", None), "dirty": result.pop("dirty", None), "date": result.pop("date", None),
                "machine": {"cores": result.pop("cores", None), "kernel": result.pop("kernel", None),
                            "python": result.pop("python", None),
                            "load_average_at_start": result.pop("load_average_at_start", None)},
                "n": result.get("n_starts"), "command": result.pop("command", None)}
        from bench._results import stamp

        doc = stamp({"benchmark": args.out.stem, "parts": {"domain": {**result, "meta": meta}}})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
