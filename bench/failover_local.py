"""Failover on the local store: N node crashes, detection and time-to-online, agent RSS and idle CPU.

Run: ``make bench`` or ``.venv/bin/python bench/failover_local.py --runs 20``.
Prints figures and writes JSON under bench/results/. Never fails on a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.cluster import LocalCluster  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def take_time(c: LocalCluster, node: str, after: float) -> float | None:
    for line in c.log(node).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("decision") == "take":
            ts = datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() - time.timezone
            if ts >= after:
                return ts
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    detect, online = [], []
    with tempfile.TemporaryDirectory() as d:
        c = LocalCluster(Path(d) / "c")
        try:
            c.start_all()
            c.wait_group("webotx1", "online", "n1")
            # idle figures
            time.sleep(2)
            procs = [psutil.Process(p.pid) for p in c.procs.values()]
            for p in procs:
                p.cpu_percent(None)
            time.sleep(5)
            cpu = [p.cpu_percent(None) for p in procs]
            rss = [p.memory_info().rss / 2**20 for p in procs]
            active = "n1"
            for i in range(args.runs):
                standby = "n2" if active == "n1" else "n1"
                t = c.crash(active)
                _, t_online = c.wait_group("webotx1", "online", standby, timeout=20)
                online.append(t_online - t)
                starts = [s for s in c.starts("webotx1") if s.node == standby and s.at >= t]
                if starts:
                    detect.append(starts[0].at - t)
                c.start(active)
                time.sleep(1.5)
                active = standby
                print(f"run {i + 1}: service started {detect[-1] if detect else float('nan'):.3f}s, "
                      f"status online {online[-1]:.3f}s after the crash", flush=True)
        finally:
            c.close()
    res = {
        "runs": args.runs,
        "heartbeat_interval": 0.2,
        "heartbeat_timeout": 1.0,
        "crash_to_service_start_s": {"min": min(detect), "median": statistics.median(detect), "p99": pct(detect, 99)},
        "crash_to_status_online_s": {"min": min(online), "median": statistics.median(online), "p99": pct(online, 99)},
        "agent_rss_mib": rss,
        "agent_idle_cpu_percent": cpu,
    }
    print(json.dumps(res, indent=2))
    out = Path(__file__).parent / "results" / "failover_local.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
