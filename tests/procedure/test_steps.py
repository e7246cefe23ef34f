"""Build steps that need no root: installed files and the systemd unit, done, checked and undone.

``systemctl`` is a recording stand-in (``$KAGEMUSHA_SYSTEMCTL``): there is no systemd here, and the
step's contract with it is four commands (daemon-reload, enable, is-enabled, disable --now).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from kagemusha.procedure import BuildContext, Manifest, load_plan, parse_facts, render_plan, write_plan
from kagemusha.procedure._steps import InstallConfig, InstallService

SYSTEMCTL = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
case "$1" in
  enable) touch "$(dirname "$0")/enabled" ;;
  disable) rm -f "$(dirname "$0")/enabled" ;;
  is-enabled) test -e "$(dirname "$0")/enabled" ;;
esac
"""


def _tree(p: Path) -> list[str]:
    return sorted(str(x.relative_to(p)) for x in p.rglob("*")) if p.exists() else []


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BuildContext:
    pw = tmp_path / "admin.pw"
    pw.write_text("adminadmin\n")
    pw.chmod(0o600)
    f = parse_facts("one-way", nodes="n1=198.18.0.11,n2=198.18.0.12", vip="198.18.0.100/24",
                    interface="kgnoif0",  # NB: no such interface: preflight sends no ARP from the host
                    disk="/dev/loop7", mount=str(tmp_path / "data1"), store=f"local:{tmp_path}/store.db",
                    admin_password_file=str(pw))
    write_plan(render_plan(f), tmp_path / "plan")
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(SYSTEMCTL)
    fake.chmod(0o755)
    monkeypatch.setenv("KAGEMUSHA_SYSTEMCTL", str(fake))
    home = tmp_path / "home"
    plan = load_plan(tmp_path / "plan")
    return BuildContext(plan=plan, node="n1", home=home, etc=tmp_path / "etc" / "kagemusha",
                        manifest=Manifest.open(home, plan.facts.cluster, "n1"), service="systemd",
                        unit_dir=tmp_path / "units", env={"KAGEMUSHA_HOME": str(home)})


def test_config_and_unit_done_checked_and_undone(ctx: BuildContext, tmp_path: Path) -> None:
    before = _tree(tmp_path / "etc"), _tree(tmp_path / "units")
    steps = [InstallConfig(), InstallService()]
    for s in steps:
        assert s.check(ctx) is None
        s.do(ctx)
        assert s.check(ctx) is not None, s.id  # now "already done"
    unit = (tmp_path / "units" / "kagemusha.service").read_text()
    assert f"--config {ctx.etc / 'cluster.toml'} --node n1" in unit
    assert f"Environment=KAGEMUSHA_HOME={ctx.home}" in unit
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert "daemon-reload" in calls and "enable kagemusha" in calls
    assert os.access(ctx.etc / "webotx1" / "start.sh", os.X_OK)

    for s in reversed(steps):
        s.undo(ctx)
    assert "disable --now kagemusha" in (tmp_path / "bin" / "calls").read_text()
    assert (_tree(tmp_path / "etc"), _tree(tmp_path / "units")) == before
    assert not ctx.manifest.entries


def test_a_foreign_file_is_never_overwritten(ctx: BuildContext) -> None:
    from kagemusha.procedure._steps import build_steps, preflight

    ctx.etc.mkdir(parents=True)
    (ctx.etc / "cluster.toml").write_text("# someone else's\n")
    steps = build_steps(ctx)
    problems = preflight(ctx, steps, {s.id: None for s in steps})
    assert any("cluster.toml exists and is not this plan's" in p for p in problems), problems
    assert (ctx.etc / "cluster.toml").read_text() == "# someone else's\n"


# A stand-in supervisor: its child (the "agent") runs in a session of its own, as the real one does,
# and ignores SIGTERM as a stuck agent would; the supervisor forwards signals and waits for it.
STUCK = r"""
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n"
    "while True: time.sleep(1)"], start_new_session=True, stdout=subprocess.PIPE)
signal.signal(signal.SIGTERM, lambda s, f: child.send_signal(s))
assert child.stdout.readline() == b"up\n"
print(child.pid, flush=True)
while child.poll() is None:
    signal.pause()
"""


def test_an_agent_that_does_not_leave_is_ended_by_pid_and_reported(
    ctx: BuildContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the undo killed the supervisor's process group after its wait, but the agent has a
    session of its own: it kept running (seen in CI as one process left after ``uninstall``)."""
    import subprocess
    import sys

    import psutil

    from kagemusha.procedure._steps import StartAgent, StepFailed

    monkeypatch.setattr("kagemusha.procedure._steps.LEAVE_GRACE", 0.3)
    monkeypatch.setattr("kagemusha.procedure._steps._systemctl", lambda *a: subprocess.CompletedProcess(a, 0))
    sup = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE, start_new_session=True)
    agent = 0
    try:
        assert sup.stdout is not None
        agent = int(sup.stdout.readline())  # NB: printed once the agent runs and ignores SIGTERM
        ctx.manifest.record("start", "process", pid=sup.pid, create_time=psutil.Process(sup.pid).create_time())
        with pytest.raises(StepFailed, match="did not stop after two SIGTERMs"):
            StartAgent().undo(ctx)
        assert not psutil.pid_exists(agent) or psutil.Process(agent).status() == psutil.STATUS_ZOMBIE
    finally:
        for pid in (sup.pid, agent):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        sup.wait()
