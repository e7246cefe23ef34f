"""Results files of the benchmarks: what every record carries, how partial runs merge, honest summaries.

Every results file under ``bench/results/`` is one JSON document::

    {"benchmark": "failover_netns",
     "about": {...constant descriptions of what is measured...},
     "<section>": {"<part>": {"meta": {commit, date, machine, n, command, ...}, ...figures...}, ...}}

A benchmark that measures several parts (modes, commands, scenarios) writes each
part whole with its own ``meta``; a later run of some parts replaces those parts
and keeps the others exactly as they were, with their own commit and date. Nothing
run-specific lives at the top level, so a partial run cannot overwrite another
run's fields with its own (or with a null).

Summaries name what they give: ``p90`` needs at least 10 samples and ``p99`` at
least 100; with fewer, the worst sample is ``max`` and there is no percentile.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Where results files go; ``KAGEMUSHA_BENCH_RESULTS`` sends a trial run elsewhere (e.g. /tmp) so that
#: it cannot overwrite the recorded figures.
RESULTS = Path(os.environ["KAGEMUSHA_BENCH_RESULTS"]) if os.environ.get("KAGEMUSHA_BENCH_RESULTS") else (
    ROOT / "bench" / "results")

#: The smallest sample for which a percentile is more than the maximum (or a near neighbour of it).
PERCENTILE_MIN_N = {90: 10, 99: 100}


def _run(argv: Sequence[str]) -> str | None:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout + r.stderr).strip() or None


def commit() -> dict[str, Any]:
    """The checkout's commit and whether its code (src/, bench/) differed from it, new files included."""
    sha = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    status = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "bench", ":!bench/results"])
    return {"sha": sha if sha and re.fullmatch(r"[0-9a-f]{40}", sha) else None, "dirty": bool(status)}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def tool_version(tool: str) -> str | None:
    """The version line of an external tool the benchmark used (``keepalived``, ``etcd``), or None if absent."""
    if tool == "keepalived":
        out = _run(["keepalived", "--version"])
        return out.splitlines()[0] if out else None
    if tool == "etcd":
        try:
            from kagemusha.testing.etcd import ETCD_BIN
        except ImportError:
            ETCD_BIN = "etcd"
        out = _run([ETCD_BIN, "--version"])
        m = re.search(r"etcd Version:\s*(\S+)", out or "")
        return m.group(1) if m else None
    raise ValueError(f"unknown tool {tool!r}")


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "cpu": _cpu_model(), "kernel": platform.release(),
            "python": platform.python_version()}


def metadata(n: int | None, *, tools: Iterable[str] = (), commit_info: dict[str, Any] | None = None,
             **extra: Any) -> dict[str, Any]:
    """What every record carries: commit, date (UTC), machine, the tools' versions, N and the command.

    ``commit_info``: the checkout's ``commit()`` taken when the run started (the code that ran), since
    the checkout may move on during a long run; taken now by default.
    """
    meta: dict[str, Any] = {
        "commit": commit_info if commit_info is not None else commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "n": n,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        # NB: other work on the machine inflates timings; the load when the record was written says how much.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for t in tools:
        meta[f"{t}_version"] = tool_version(t)
    meta.update(extra)
    return meta


def pct(xs: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``xs``."""
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def summary(xs: Sequence[float]) -> dict[str, float | int] | None:
    """n, min, median, max, and the percentiles the sample is large enough for (see ``PERCENTILE_MIN_N``)."""
    if not xs:
        return None
    out: dict[str, float | int] = {"n": len(xs), "min": min(xs), "median": statistics.median(xs)}
    for p, need in PERCENTILE_MIN_N.items():
        if len(xs) >= need:
            out[f"p{p}"] = pct(xs, p)
    out["max"] = max(xs)
    return out


def tail_name(s: dict[str, Any]) -> str:
    """The name of the worst-case figure a summary honestly has: ``p99`` with 100+ samples, else ``max``."""
    return "p99" if "p99" in s else "max"


def path_of(benchmark: str) -> Path:
    return RESULTS / f"{benchmark}.json"


def load(benchmark: str) -> dict[str, Any]:
    """The results document of ``benchmark`` (empty when there is none yet or it cannot be read)."""
    try:
        doc = json.loads(path_of(benchmark).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def commits_of(doc: Any) -> list[str]:
    """Every commit named anywhere in a results document (a part's ``meta.commit``, a campaign entry's
    ``commit``), as ``sha`` or ``sha+dirty``: what ``stamp`` lists at the top of the file."""
    found: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "commit" and (text := _commit_text(v)):
                    found.add(text)
                elif k == "commit" and isinstance(v, dict) and v.get("written_by"):
                    # a run from before records carried the commit: the commit that stored its results
                    found.update(f"{sha} (stored the results; the run did not record its own commit)"
                                 for sha in v["written_by"])
                elif k != "commits":
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return sorted(found)


def _commit_text(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, dict) and v.get("sha"):
        return str(v["sha"]) + ("+dirty" if v.get("dirty") else "")
    return None


def newest_commit(doc: Any) -> str | None:
    """The commit of the newest record in a results document (the one with the latest ``date``)."""
    best: tuple[str, str] | None = None

    def walk(x: Any) -> None:
        nonlocal best
        if isinstance(x, dict):
            sha, date = _commit_text(x.get("commit")), x.get("date")
            if sha and isinstance(date, str) and (best is None or date > best[0]):
                best = (date, sha)
            for k, v in x.items():
                if k not in ("commit", "commits"):
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return best[1] if best else None


def stamp(doc: dict[str, Any]) -> dict[str, Any]:
    """Say at the top of a results file which commit produced it: ``commit``, the newest record's
    commit, and ``commits``, every commit behind its records (each part keeps its own record).

    NB: these are the file's first keys, so that they are what a reader (or a tool reading the head of
    the file) sees first; a dict keeps insertion order, so the other keys are put back after them.
    """
    # NB: from the records only: the file's previous top-level ``commit`` is not a record (counted, it
    # kept a commit in the list after the part it came from had been run again).
    rest = {k: v for k, v in doc.items() if k not in ("commit", "commits")}
    commits = commits_of(rest)
    doc.clear()
    doc.update({"commit": newest_commit(rest), "commits": commits, **rest})
    return doc


def save(benchmark: str, section: str, parts: dict[str, dict[str, Any]], meta: dict[str, Any],
         *, about: dict[str, Any] | None = None) -> Path:
    """Write ``parts`` (each whole, each with ``meta``) into ``section``; keep every other part as it was.

    ``about`` holds constant descriptions (what a figure means); only its non-null values are written.
    """
    doc = load(benchmark)
    doc["benchmark"] = benchmark
    if about:
        doc["about"] = {**doc.get("about", {}), **{k: v for k, v in about.items() if v is not None}}
    sec = doc.get(section) if isinstance(doc.get(section), dict) else {}
    for name, part in parts.items():
        sec[name] = {"meta": meta, **{k: v for k, v in part.items() if k != "meta"}}
    doc[section] = sec
    stamp(doc)
    path = path_of(benchmark)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return path
