"""The master's quick leftover check (``may_have_processes``) agrees with the full psutil scan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kagemusha.domains._layout import may_have_processes
from kagemusha.domains._procs import domain_processes


def test_quick_check_finds_tagged_and_session_processes(tmp_path: Path) -> None:
    tag = tmp_path / "domain1"
    assert not may_have_processes(tag, None) and not domain_processes(tag)
    env = dict(os.environ, KAGEMUSHA_DOMAIN=str(tag))
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], env=env, stdin=subprocess.PIPE
    )
    try:
        assert may_have_processes(tag, None)
        assert [p.pid for p in domain_processes(tag)] == [child.pid]
        assert not may_have_processes(tmp_path / "domain10", None)  # a prefix is not the tag
    finally:
        child.communicate(b"")
    assert not may_have_processes(tag, None)
    # an untagged process in the session counts too
    leader = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, start_new_session=True
    )
    try:
        assert may_have_processes(tag, leader.pid)
        assert not may_have_processes(tag, leader.pid, exclude=frozenset({leader.pid}))
    finally:
        leader.communicate(b"")
