"""Benchmark records stay honest: every part says where it comes from, and the README's table is generated.

Structure only, never speed (issue 12, item 6).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
META_KEYS = {"commit", "date", "machine", "n", "command"}


def test_readme_table_is_generated_from_the_results() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--check"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr + r.stdout


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_part_of_a_results_file_carries_its_record(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc.get("benchmark") == path.stem
    from bench._results import commits_of, newest_commit

    assert doc.get("commits") and doc["commits"] == commits_of(doc), f"{path.name}: no list of the commits at the top"
    assert doc.get("commit") and doc["commit"] == newest_commit({k: v for k, v in doc.items() if k != "commit"}), (
        f"{path.name}: no commit (the newest record's) at the top")
    assert list(doc)[:2] == ["commit", "commits"], f"{path.name}: the commit and the list of commits are not the first keys"
    # "timers": the fault campaign's constant settings, not a part
    sections = {k: v for k, v in doc.items()
                if k not in ("benchmark", "about", "timers", "commit", "commits") and isinstance(v, dict)}
    assert sections, f"{path.name}: no parts"
    for section, parts in sections.items():
        for name, part in parts.items():
            meta = part.get("meta", part)  # under "meta", or inline (bench/faults.py's entries)
            assert isinstance(meta, dict) and META_KEYS <= set(meta), f"{path.name}: {section}.{name}: {meta}"
            assert {"cores", "kernel", "python"} <= set(meta["machine"]), f"{path.name}: {section}.{name}"
            for key, value in part.items():  # a percentile only where the sample is big enough for one
                if isinstance(value, dict) and "n" in value and "median" in value:
                    assert "p99" not in value or value["n"] >= 100, f"{path.name}: {section}.{name}.{key}"
                    assert "p90" not in value or value["n"] >= 10, f"{path.name}: {section}.{name}.{key}"


def test_a_partial_run_keeps_the_other_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT))
    from bench import _results

    monkeypatch.setattr(_results, "RESULTS", tmp_path)
    a = _results.metadata(3, tools=("keepalived",))
    _results.save("demo", "modes", {"keepalived": {"x": 1}}, a)
    _results.save("demo", "modes", {"kagemusha": {"x": 2}}, _results.metadata(5))
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert doc["modes"]["keepalived"] == {"meta": a, "x": 1}
    # a part run again from another commit: the old commit leaves the file's list
    older = {**a, "commit": {"sha": "e" * 40, "dirty": False}}
    newer = {**a, "commit": {"sha": "f" * 40, "dirty": False}, "date": "2999-01-01T00:00:00+00:00"}
    _results.save("solo", "modes", {"keepalived": {"x": 3}}, older)
    _results.save("solo", "modes", {"keepalived": {"x": 4}}, newer)
    again = json.loads((tmp_path / "solo.json").read_text())
    assert again["commits"] == ["f" * 40] and again["commit"] == "f" * 40, again["commits"]
    assert doc["modes"]["kagemusha"]["meta"]["n"] == 5 and "keepalived_version" not in doc["modes"]["kagemusha"]["meta"]
    s = _results.summary([0.3, 0.1, 0.2])
    assert s == {"n": 3, "min": 0.1, "median": 0.2, "max": 0.3}, "with N < 10 no percentile, the worst is max"
    assert set(_results.summary([float(i) for i in range(100)]) or {}) >= {"p90", "p99"}
