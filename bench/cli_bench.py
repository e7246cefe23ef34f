"""CLI cold start: wall time of ``kagemusha --help``, ``status --json`` and ``domain list``, N runs each.

``status --json`` runs against a two-node cluster of real agents on the local store,
both through the agents' API (the cluster has an API token, as the demo's does) and
on the store directly (no token). Each run is a fresh ``python -m kagemusha`` process
(the console script does the same imports). Target (issue 12): median <= 0.25 s each.

Run: ``.venv/bin/python bench/cli_bench.py --runs 20``. Prints figures and writes
``bench/results/cli.json``. Never fails on a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.cluster import LocalCluster

from bench import _results

TARGET_S = 0.25


def timed(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of ``argv``, ``runs`` times (one uncounted warm-up run first).

    The CPU time is what the command itself costs; the wall time also holds whatever
    else the machine was doing (see the load average in the record).
    """
    wall, cpu = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        dt = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-500:]}")
        if i:
            wall.append(dt)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per command (default 20)")
    ap.add_argument("--results-dir", type=Path, default=None,
                    help="write cli.json here instead of bench/results (a trial run)")
    args = ap.parse_args()
    if args.results_dir is not None:
        _results.RESULTS = args.results_dir
    code = _results.commit()  # the code that runs, before the checkout can move on
    # NB: an installed package has its bytecode cached; with PYTHONDONTWRITEBYTECODE inherited (as in
    # some shells) every run would compile kagemusha's modules from source, tens of ms each: the
    # warm-up run writes the cache, as the first run after an install would.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    # SIGTERM (timeout, kill) ends the run through the finally blocks: no agent or etcd is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    k = [sys.executable, "-m", "kagemusha"]
    parts: dict[str, dict[str, object]] = {}

    def record(name: str, argv: list[str]) -> None:
        load_before = os.getloadavg()[0]
        xs, cpu = timed(argv, args.runs)
        s, c = _results.summary(xs), _results.summary(cpu)
        assert s is not None and c is not None
        parts[name] = {"argv": ["kagemusha", *argv[3:]], "wall_seconds": xs, "wall_s": s, "cpu_s": c,
                       "target_median_s": TARGET_S, "meets_target": s["median"] <= TARGET_S,
                       "load_average_1min": [load_before, os.getloadavg()[0]]}
        print(f"{name:52s} n={s['n']:3d} wall min {s['min']:.3f} median {s['median']:.3f} max {s['max']:.3f} s; "
              f"cpu median {c['median']:.3f} s (target median <= {TARGET_S} s: "
              f"{'met' if s['median'] <= TARGET_S else 'missed'}; load {load_before:.1f})", flush=True)

    with tempfile.TemporaryDirectory(prefix="kg-cli-bench-") as d:
        record("`kagemusha --help`", [*k, "--help"])
        domains = Path(d) / "domains"
        domains.mkdir()
        record("`kagemusha domain list`", [*k, "domain", "list", "--domaindir", str(domains)])
        for name, token in (("api", "bench-token-0123456789"), ("store", None)):
            c = LocalCluster(Path(d) / name, api_token=token)
            try:
                c.start_all()
                c.wait_group("webotx1", "online", timeout=60)
                how = "through the API" if token else "on the store, no API token"
                record(f"`kagemusha status --json`, {how}", [*k, "status", "--json", "--config", str(c.config_path)])
            finally:
                c.close()
    meta = _results.metadata(args.runs, commit_info=code, env_pythonpath=os.environ.get("PYTHONPATH"))
    path = _results.save("cli", "commands", parts, meta, about={
        "what": "wall time of one `python -m kagemusha ...` process, fork to exit, after one uncounted warm-up run",
        "cluster": "two agents on the local store (tests/integration/cluster.py LocalCluster), one group online",
    })
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
