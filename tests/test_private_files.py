"""Files that hold tokens, hashes or passwords are 0600 from their first byte (issue 11, item 4)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kagemusha.demo import write_private


def test_write_private_is_never_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0)  # the worst umask: write_text would make 0666
    try:
        p = tmp_path / "api.token"
        write_private(p, "s3cret\n")
        assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == "s3cret\n"
        p.chmod(0o644)  # an existing file is narrowed too
        write_private(p, "other\n")
        assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == "other\n"
    finally:
        os.umask(old)
