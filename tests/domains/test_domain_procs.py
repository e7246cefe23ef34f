"""Which processes belong to a domain: the tag, the session, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from kagemusha.domains._procs import ProcessRecord, _session_is_ours, domain_processes, kill_all

from .conftest import alive

pytestmark = pytest.mark.timeout(30)

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_tagged_processes_are_found_and_killed_untagged_are_not(workdir: Path) -> None:
    ddir = workdir / "domains" / "d"
    tagged = subprocess.Popen(
        SLEEP, env={**os.environ, "KAGEMUSHA_DOMAIN": str(ddir)}, start_new_session=True
    )
    other = subprocess.Popen(
        SLEEP, env={**os.environ, "KAGEMUSHA_DOMAIN": str(ddir) + "x"}, start_new_session=True
    )
    plain = subprocess.Popen(SLEEP, start_new_session=True)
    try:
        found = {p.pid for p in domain_processes(ddir)}
        assert tagged.pid in found and other.pid not in found and plain.pid not in found
        assert kill_all(ddir) == [tagged.pid]
        tagged.wait(timeout=5)
        assert alive(other.pid) and alive(plain.pid)
    finally:
        for p in (tagged, other, plain):
            p.kill()
            p.wait()


def test_session_members_count_only_while_the_session_is_provably_ours(workdir: Path) -> None:
    leader = subprocess.Popen(SLEEP, start_new_session=True)  # untagged, but in the recorded session
    try:
        ct = psutil.Process(leader.pid).create_time()
        ours = ProcessRecord("running", leader.pid, ct)
        assert [p.pid for p in domain_processes(workdir / "d", ours)] == [leader.pid]
        # same session id, but the recorded master was created at another time: a reused pid
        reused = ProcessRecord("running", leader.pid, ct - 3600)
        assert not _session_is_ours(leader.pid, ct - 3600)
        assert domain_processes(workdir / "d", reused) == []
    finally:
        leader.kill()
        leader.wait()
