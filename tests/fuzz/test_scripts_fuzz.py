"""Hypothesis: exec monitors and resources whose scripts print binary junk, never exit, or exit oddly.

Each generated script writes random bytes (with or without newlines, up to hundreds of KiB, so a
single "line" can be endless), then exits with a random code, kills itself with a signal, or hangs
ignoring SIGTERM. The driver must: return the code (``exit 0`` / ``command exited with N`` / ``was
killed by signal 9 (SIGKILL)``), never raise anything else; when the caller's timeout fires, leave no
process of the run behind; and log only bounded, printable lines. ``examples(12, 300)`` scripts per test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kagemusha import _proc
from kagemusha.errors import ResourceFailed
from kagemusha.monitors._base import MonitorContext
from kagemusha.monitors.exec import ExecMonitor
from kagemusha.resources import ResourceContext, StartEnv
from kagemusha.resources.exec import MAX_LINE, MAX_LINES, ExecResource
from tests.fuzz.conftest import examples

HANG_TIMEOUT = 1.0


@dataclass(frozen=True)
class Script:
    junk: bytes
    repeat: int
    end: str  # "exit", "signal", "hang"
    code: int

    def text(self, junk_file: Path) -> str:
        body = f'for i in $(seq {self.repeat}); do cat "{junk_file}"; done\n'
        if self.end == "exit":
            return body + f"exit {self.code}\n"
        if self.end == "signal":
            return body + f"kill -{self.code} $$\n"
        # hang, ignoring SIGTERM, with a child that also holds the output pipe
        return body + "trap '' TERM\nsleep 300 &\nwhile :; do sleep 1; done\n"


scripts = st.builds(
    Script,
    junk=st.binary(max_size=300) | st.binary(min_size=1, max_size=40).map(lambda b: b * 2000),
    repeat=st.integers(1, 30),
    end=st.sampled_from(["exit", "exit", "signal", "hang"]),
    code=st.integers(0, 255),
).map(lambda s: s if s.end != "signal" else Script(s.junk, s.repeat, s.end, [9, 15, 6, 11][s.code % 4]))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kg-fuzz-scripts-") as d:
        yield Path(d)


def _check_log(lines: Lines) -> None:
    assert len(lines.messages) <= MAX_LINES + 1
    for m in lines.messages:
        assert all(ch.isprintable() or ch == "\t" for ch in m), repr(m[:200])
        assert len(m) <= MAX_LINE + 200


def _expect(s: Script) -> str:
    if s.end == "exit":
        return "exit 0" if s.code == 0 else f"exited with {s.code}"
    return f"killed by signal {s.code}"


@settings(max_examples=examples(12, 300))
@given(s=scripts)
def test_monitor_scripts(workdir: Path, s: Script) -> None:
    (workdir / "junk").write_bytes(s.junk)
    cid = f"fuzz{os.getpid()}"
    ctx = MonitorContext("c", "g", "m1", "n1", workdir / "state", cluster_id=cid)
    mon = ExecMonitor(ExecMonitor.Params.model_validate({"command": s.text(workdir / "junk")}), ctx)
    lines = Lines()
    out = logging.getLogger("kagemusha.monitor.output")
    out.addHandler(lines)
    out.setLevel(logging.INFO)
    tag = {"KAGEMUSHA_CLUSTER_ID": cid, "KAGEMUSHA_MONITOR": "m1"}
    t0 = time.monotonic()
    try:
        if s.end == "hang":
            with pytest.raises(TimeoutError):
                asyncio.run(asyncio.wait_for(mon.check(), HANG_TIMEOUT))
            assert time.monotonic() - t0 < HANG_TIMEOUT + 5, "the timeout did not end the check in time"
        else:
            res = asyncio.run(asyncio.wait_for(mon.check(), 60))
            assert res.ok == (s.end == "exit" and s.code == 0), res
            assert _expect(s) in res.detail, res
    finally:
        out.removeHandler(lines)
        left = _proc.find_tagged(tag)
        _proc.kill_tagged(tag)
    assert not left, f"processes left behind: {[p.pid for p in left]}"
    _check_log(lines)


@settings(max_examples=examples(12, 300))
@given(s=scripts)
def test_resource_scripts(workdir: Path, s: Script) -> None:
    (workdir / "junk").write_bytes(s.junk)
    (workdir / "start.sh").write_text("#!/bin/sh\n" + s.text(workdir / "junk"))
    (workdir / "start.sh").chmod(0o755)
    (workdir / "stop.sh").write_text("#!/bin/sh\nexit 0\n")
    cid = f"fuzzr{os.getpid()}"
    # a fresh state directory each time: a start after a successful one is a no-op (OCF), by design
    state = Path(tempfile.mkdtemp(dir=workdir, prefix="state-"))
    ctx = ResourceContext("c", "g", "exec1", "n1", state, cluster_id=cid, base_dir=workdir)
    res = ExecResource(ExecResource.Params.model_validate({"start": "start.sh", "stop": "stop.sh"}), ctx)
    tag = ctx.tag_env()
    try:
        if s.end == "hang":
            with pytest.raises(TimeoutError):
                asyncio.run(asyncio.wait_for(res.start(StartEnv()), HANG_TIMEOUT))
        elif s.end == "exit" and s.code == 0:
            asyncio.run(asyncio.wait_for(res.start(StartEnv()), 60))
        else:
            with pytest.raises(ResourceFailed) as info:
                asyncio.run(asyncio.wait_for(res.start(StartEnv()), 60))
            assert _expect(s) in str(info.value) and "start script" in str(info.value), info.value
    finally:
        left = _proc.find_tagged(tag)
        _proc.kill_tagged(tag)
    assert not left, f"processes left behind: {[p.pid for p in left]}"


def test_endless_binary_line_is_not_an_error(workdir: Path) -> None:
    """200 KB without a newline made ``run_script`` raise ValueError (readline's limit) instead of the exit code."""
    s = Script(b"\x00\xff\x1b[2J" * 50_000, 1, "exit", 3)
    test_monitor_scripts.hypothesis.inner_test(workdir, s)  # type: ignore[attr-defined]
