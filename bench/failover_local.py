"""Failover on the local store: N node crashes, detection and time-to-online, agent RSS and idle CPU.

Run: ``make bench`` or ``.venv/bin/python bench/failover_local.py --runs 20``.
Prints figures and writes ``bench/results/failover_local.json`` (with ``bench/_results``'s
metadata). Never fails on a time. RSS and CPU are the agent's own process (the
supervisor's child), not its supervisor.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.cluster import LocalCluster

from bench import _results

IDLE_S = 5.0

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    code = _results.commit()  # the code that runs, before the checkout can move on
    detect, online = [], []
    with tempfile.TemporaryDirectory() as d:
        c = LocalCluster(Path(d) / "c")
        try:
            c.start_all()
            assert c.config is not None
            timers = {"heartbeat_interval": c.config.cluster.heartbeat_interval,
                      "heartbeat_timeout": c.config.cluster.heartbeat_timeout}
            c.wait_group("webotx1", "online", "n1")
            # idle figures
            time.sleep(2)
            procs = [psutil.Process(c.agent_pid(n)) for n in c.nodes]  # the agents, not their supervisors
            for p in procs:
                p.cpu_percent(None)
            time.sleep(IDLE_S)
            cpu = [p.cpu_percent(None) for p in procs]
            rss = [p.memory_info().rss / 2**20 for p in procs]
            active = "n1"
            for i in range(args.runs):
                standby = "n2" if active == "n1" else "n1"
                # NB: the crash is the SIGKILL of the node's supervisor, the first thing crash() does (its own
                # return value is taken after every process of the node is gone, which can be up to a second later).
                t = time.time()
                c.crash(active)
                _, t_online = c.wait_group("webotx1", "online", standby, timeout=20)
                online.append(t_online - t)
                starts = [s for s in c.starts("webotx1") if s.node == standby and s.at >= t]
                started = starts[0].at - t if starts else None
                if started is not None:
                    detect.append(started)
                c.start(active)
                time.sleep(1.5)
                active = standby
                print(f"run {i + 1}: service started "
                      f"{'(no trace)' if started is None else f'{started:.3f}s'}, "
                      f"status online {online[-1]:.3f}s after the crash", flush=True)
        finally:
            c.close()
    res = {
        **timers,  # the timers the agents ran with (the config's defaults), read from their config
        "crash_to_service_start_s": _results.summary(detect),
        "crash_to_status_online_s": _results.summary(online),
        "crash_to_service_start_samples": detect,
        "crash_to_status_online_samples": online,
        "agent_rss_mib": rss,
        "agent_idle_cpu_percent": cpu,
        "idle_sample_s": IDLE_S,
    }
    print(json.dumps(res, indent=2))
    out = _results.save("failover_local", "modes", {"default": res}, _results.metadata(args.runs, commit_info=code), about={
        "what": "two agents on the local store, one exec group; the active node is crashed (agent, supervisor and "
                "services killed) N times",
        "agent": "RSS and CPU of each agent process (the supervisor's child), idle, one group online",
        "crash": "times count from the SIGKILL of the active node's supervisor (then its agent and every process "
                 "it started); service start = the survivor's start script ran, status online = `status` said so "
                 "(polled, so it includes a status call's latency)",
    })
    print(f"written to {out}")


if __name__ == "__main__":
    main()
