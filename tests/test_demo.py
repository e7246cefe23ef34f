"""The main job: ``make demo`` builds a two-node cluster, crashes n1 and shows the failover (here with --exit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_shows_a_failover_and_stops_cleanly(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "kagemusha.demo", "--dir", str(tmp_path / "demo"), "--exit"],
                       capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "served by n1" in r.stdout
    assert "failed over to n2" in r.stdout and "served by n2" in r.stdout
    assert "stopped" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    # files holding a token or a password are private (issue 11)
    for name in ("api.token", "domain1.properties"):
        assert (tmp_path / "demo" / name).stat().st_mode & 0o077 == 0, name
