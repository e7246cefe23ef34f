"""Wall time of the test suite as ``make test`` runs it: each pass timed, its summary and slowest tests kept.

    .venv/bin/python bench/suite.py [--workers 3]

Runs the same two pytest passes as the Makefile's ``test`` target (the serial pass, then
the rest over xdist workers), with this interpreter, and writes ``bench/results/suite.json``.
Bootstrap is not included (time ``scripts/bootstrap`` on a fresh clone separately). The
suite takes minutes and loads the machine: run it alone. Never fails on a time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import _results

ROOT = Path(__file__).resolve().parents[1]


def passes(workers: int) -> list[tuple[str, list[str]]]:
    """The Makefile's two passes (keep in step with its ``test`` target)."""
    base = [sys.executable, "-m", "pytest", "-q", "--durations=30"]
    return [("serial", [*base, "-m", "serial", "-p", "no:xdist"]),
            ("parallel", [*base, "-m", "not serial", "-n", str(workers), "--dist", "loadgroup"])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    ap.add_argument("--passes", default="serial,parallel", help="which passes to run (a partial run is recorded "
                                                                 "as such and keeps the full run's record)")
    args = ap.parse_args()
    code = _results.commit()  # the code that runs, before the checkout can move on
    wanted = [p.strip() for p in args.passes.split(",") if p.strip()]
    runs: dict[str, dict[str, object]] = {}
    total = 0.0
    rcs = []
    for name, argv in [(n, a) for n, a in passes(args.workers) if n in wanted]:
        log = args.log_dir / f"kagemusha-suite-{name}.log"
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        with log.open("w") as f:
            rc = subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
        dt = time.monotonic() - t0
        total += dt
        rcs.append(rc)
        text = log.read_text(errors="replace")
        summary = next((ln.strip("= ") for ln in reversed(text.splitlines()) if re.search(r"\d+ (passed|failed)", ln)),
                       "")
        slow = [ln.strip() for ln in text.splitlines() if re.match(r"^\d+\.\d+s (call|setup|teardown) ", ln)][:30]
        failed = [ln.strip() for ln in text.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
        runs[name] = {"argv": argv[1:], "exit": rc, "seconds": round(dt, 1), "summary": summary,
                      "failed": failed, "slowest": slow, "load_average_1min_before": load0, "log": str(log)}
        print(f"{name}: exit {rc} in {dt:.0f} s: {summary}", flush=True)
    runs["total"] = {"seconds": round(total, 1), "exit": max(rcs)}
    figure = (f"{total / 60:.1f} min without bootstrap ("
              + ", ".join(f"{n} pass {runs[n]['seconds']:.0f} s: {runs[n]['summary']}" for n in wanted)
              + f"; {args.workers} workers; load average {max(r['load_average_1min_before'] for n, r in runs.items() if n != 'total'):.0f} "  # type: ignore[call-overload]
              + f"on {os.cpu_count()} cores)")
    full = wanted == ["serial", "parallel"]
    part = {"what": "the whole test suite (`make test` passes, as root)" if full else
            f"the test suite, {' and '.join(wanted)} pass only", "figure": figure, "passes": runs,
            "workers": args.workers, "cores": os.cpu_count()}
    path = _results.save("suite", "runs", {"make test" if full else "+".join(wanted): part}, _results.metadata(1, commit_info=code))
    print(f"{figure}\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
