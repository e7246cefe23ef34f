"""Which processes belong to a domain: the tag, the session, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kagemusha.domains._procs import (
    ProcessRecord,
    _session_is_ours,
    domain_processes,
    kill_all,
    processes_tagged_under,
)

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


def test_a_newcomer_that_reused_the_session_id_during_the_scan_is_not_the_domains(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded session was gone when the scan began (its id free), and a new process got that pid and
    made itself a session leader before the scan reached it: not the domain's (it was killed with the
    domain's leftovers: a script's `setsid sleep 300` vanished beside the domain tests)."""
    from kagemusha.domains import _procs

    newcomer = subprocess.Popen(SLEEP, start_new_session=True)
    try:
        ct = psutil.Process(newcomer.pid).create_time()
        deadline = time.monotonic() + 10
        while os.getsid(newcomer.pid) != newcomer.pid:  # it calls setsid() before exec: wait for that
            assert time.monotonic() < deadline
            time.sleep(0.01)
        record = ProcessRecord("running", newcomer.pid, ct - 3600)  # a master of an hour ago, long gone
        real = _procs._session_is_ours
        calls: list[bool] = []

        def gone_when_the_scan_began(session: int, since: float | None) -> bool:
            calls.append(True)
            return True if len(calls) == 1 else real(session, since)  # the first check saw no process

        monkeypatch.setattr(_procs, "_session_is_ours", gone_when_the_scan_began)
        assert domain_processes(workdir / "d", record) == []
        assert alive(newcomer.pid)
    finally:
        newcomer.kill()
        newcomer.wait()


@pytest.mark.root
def test_another_mount_namespace_counts_only_if_it_sees_the_same_directory(workdir: Path) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: this test must run as root")
        pytest.skip("needs root for unshare --mount")
    ddir = workdir / "data1" / "domains" / "d"
    ddir.mkdir(parents=True)
    env = {**os.environ, "KAGEMUSHA_DOMAIN": str(ddir)}
    # Same directory, seen from a private mount namespace: ours.
    same = subprocess.Popen(["unshare", "--mount", "--propagation", "private", *SLEEP], env=env)
    # Same path, but another filesystem mounted there in that namespace (another node's disk): not ours.
    script = f'mount -t tmpfs tmpfs {workdir / "data1"} && mkdir -p {ddir} && exec "$@"'
    other = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *SLEEP], env=env
    )
    try:
        def cmdline(p: psutil.Process) -> list[str]:
            # NB: this test's process may have zombie children of earlier tests: they have no cmdline.
            try:
                return p.cmdline()
            except psutil.Error:
                return []

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cmds = {p.pid: cmdline(p) for p in psutil.Process(os.getpid()).children(recursive=True)}
            if sum(1 for c in cmds.values() if c[:1] == [sys.executable]) == 2:
                break
            time.sleep(0.05)
        sleepers = {
            p.pid: p
            for p in psutil.Process(os.getpid()).children(recursive=True)
            if cmdline(p)[:1] == [sys.executable]
        }
        assert len(sleepers) == 2
        found = {p.pid for p in domain_processes(ddir)}
        same_pid = next(pid for pid in sleepers if psutil.Process(pid).ppid() == same.pid or pid == same.pid)
        other_pid = next(pid for pid in sleepers if pid != same_pid)
        assert same_pid in found and other_pid not in found
        assert {p.pid for p in processes_tagged_under(workdir / "data1")} == {same_pid}
    finally:
        for p in (same, other):
            p.kill()
            p.wait()
