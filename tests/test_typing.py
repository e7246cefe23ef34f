"""mypy --strict on the package (pyproject's [tool.mypy]): the typed public surface stays typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_mypy_strict() -> None:
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
