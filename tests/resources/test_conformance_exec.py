"""exec: check_driver for real (ocf-tester's script), with scripts that leave a detached service running."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kagemusha import _proc
from kagemusha.resources import ResourceContext, StartEnv, driver_class
from kagemusha.resources.exec import ExecResource
from kagemusha.testing import check_driver

START = """#!/bin/sh
# a service that detaches (new session), as the seed's otxadmin start-domain does
setsid sleep 300 >/dev/null 2>&1 < /dev/null &
echo "started $CLP_EVENT $CLP_SERVER $CLP_DISK"
"""
STOP = """#!/bin/sh
for p in $(pgrep -f "^sleep 300$"); do
  if tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx "KAGEMUSHA_RESOURCE=$KAGEMUSHA_RESOURCE"; then
    if tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | grep -qx "KAGEMUSHA_CLUSTER_ID=$KAGEMUSHA_CLUSTER_ID"; then kill $p; fi
  fi
done
echo stopped
"""


def test_registered() -> None:
    assert driver_class("exec") is ExecResource


def test_conformance(tmp_path: Path) -> None:
    for name, text in (("start.sh", START), ("stop.sh", STOP)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    cid = f"conf{os.getpid()}"
    ctx = ResourceContext("c", "g", "exec1", "n1", tmp_path / "state", cluster_id=cid, base_dir=tmp_path)
    tag = ctx.tag_env()

    def make(params: dict[str, str]) -> ExecResource:
        return ExecResource(ExecResource.Params.model_validate(params), ctx)

    def really(step: str, running: bool) -> None:
        procs = _proc.find_tagged(tag)
        assert bool(procs) == running, f"tagged processes {[p.pid for p in procs]}, expected running={running}"

    try:
        report = asyncio.run(
            check_driver(make, {"start": "start.sh", "stop": "stop.sh"}, env=StartEnv(), timeout=20, after_step=really)
        )
    finally:
        _proc.kill_tagged(tag)
    text = str(report)
    assert "probe after stop again -> stopped" in text
    assert "probe after fence again -> stopped" in text
    assert not _proc.find_tagged(tag)
