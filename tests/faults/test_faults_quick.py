"""The fault-injection campaign's quick mode: one run of every fault kind, as a test (root, slow).

Runs ``bench/faults.py --runs 1`` on the local store (every fault that applies there), then on a
three-member etcd the faults that only etcd has (partition, store outage, slow store, packet loss);
slow store runs both of its phases (a delay below ``store_timeout``: the group stays; above: the
standby takes over), through the delay proxy that stands in for netem.
Each run's checks are the campaign's own, from outside the agents: no VIP, disk or service on two
nodes at once, no acknowledged write lost. The local campaign ends with a self-test
(``selftest-split``): the campaign breaks every invariant itself and must report it. The results
go to a temporary file, never to
``bench/results``. The full campaign is ``make faults``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kagemusha.testing import netns
from kagemusha.testing.etcd import require_etcd

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ETCD_ONLY = ["partition", "store-outage", "slow-store", "packet-loss"]


def _campaign(tmp: Path, *args: str) -> tuple[int, str, dict[str, object]]:
    out = tmp / "faults.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "faults.py"), "--runs", "1", "--out", str(out),
                        "--doc", str(tmp / "no-doc.md"), *args],
                       check=False, capture_output=True, text=True, timeout=800, env=env)
    doc = json.loads(out.read_text()) if out.exists() else {}
    return r.returncode, r.stdout[-6000:] + r.stderr[-3000:], doc


def _assert_clean(doc: dict[str, object], store: str, faults: list[str], output: str) -> None:
    entries = doc.get("entries", {})
    assert isinstance(entries, dict)
    for f in faults:
        e = entries.get(f"{f}/{store}")
        assert e is not None, f"no entry for {f}/{store}\n{output}"
        if not e["applicable"]:
            continue
        assert e["runs"] == 1, (f, e)
        assert e["split_brain_windows"] == {"vip": 0, "arp": 0, "disk": 0, "service": 0}, (f, e["violations"])
        assert e["lost_acknowledged_writes"] == 0, (f, e["violations"])
        assert e["failed_runs"] == [], f"{f}/{store}: {e['failed_runs']}\n{output}"


def test_every_fault_once_on_the_local_store(tmp_path: Path) -> None:
    """Every fault once; then the self-test: the campaign puts VIP, disk and a service on the standby
    itself, and its checks must see each of them (exit 1, the run named)."""
    netns.require()
    from bench.faults import FAULTS, SELFTEST, applicable

    rc, output, doc = _campaign(tmp_path, "--store", "local", "--faults", ",".join([*FAULTS, SELFTEST]))
    assert rc == 1, output
    _assert_clean(doc, "local", FAULTS, output)
    entries = doc["entries"]
    assert isinstance(entries, dict)
    st = entries[f"{SELFTEST}/local"]
    assert all(n >= 1 for n in st["split_brain_windows"].values()), (st["split_brain_windows"], st["failed_runs"],
                                                                      st["notes"], output)
    assert f"INVARIANT BROKEN: local {SELFTEST} run" in output, output
    assert not entries["store-outage/local"]["applicable"]  # reported as not applicable, with the reason
    assert all(applicable(f, "local") is None for f in FAULTS if entries[f"{f}/local"]["applicable"])


def test_etcd_only_faults_once(tmp_path: Path) -> None:
    netns.require()
    require_etcd()
    rc, output, doc = _campaign(tmp_path, "--store", "etcd", "--faults", ",".join(ETCD_ONLY))
    assert rc == 0, output
    _assert_clean(doc, "etcd", ETCD_ONLY, output)
    slow = doc["entries"]["slow-store/etcd"]  # type: ignore[index]
    assert slow["applicable"], slow  # the delay proxy stands in for netem: it runs on any kernel
    notes = " ".join(slow["notes"])
    assert "the group stayed on the active" in notes and "the standby took over" in notes, slow
