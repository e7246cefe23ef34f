"""The mount-table reading behind disk's probe (no root: synthetic mountinfo files)."""

from __future__ import annotations

import os
from pathlib import Path

from kagemusha import _os
from kagemusha.resources.disk import device_mount_points, mount_state

# /dev/null is a character device everywhere, so tests use a device that is missing -> source match,
# and the real major:minor of the root file system for the major:minor path.
ROOT = os.stat("/")
MAJ, MIN = os.major(ROOT.st_dev), os.minor(ROOT.st_dev)

TABLE = f"""\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 {MAJ}:{MIN} / / rw,relatime - ext4 /dev/vda rw
40 27 7:3 / /data\\0401 rw,relatime shared:5 - ext4 /dev/kg-missing rw
41 27 7:3 /sub /bound rw,relatime - ext4 /dev/kg-missing rw
42 40 0:50 / /data\\0401/inner rw - tmpfs kgtmp rw
"""


def write(tmp_path: Path, text: str = TABLE) -> str:
    p = tmp_path / "mountinfo"
    p.write_text(text)
    return str(p)


def test_parse_and_unescape(tmp_path: Path) -> None:
    entries = _os.read_mountinfo(write(tmp_path))
    e = entries[2]
    assert (e.mount_point, e.major, e.minor, e.fstype, e.source, e.root) == (
        "/data 1", 7, 3, "ext4", "/dev/kg-missing", "/")
    assert entries[3].root == "/sub"


def test_mount_state(tmp_path: Path) -> None:
    mi = write(tmp_path)
    assert mount_state("/dev/kg-missing", "/data 1", mi).mounted
    st = mount_state("/dev/kg-missing", "/elsewhere", mi)
    assert not st.mounted and "mounted at /data 1, /bound" in st.conflict
    st = mount_state("/dev/kg-other", "/data 1", mi)
    assert not st.mounted and "has /dev/kg-missing (ext4) mounted" in st.conflict
    st = mount_state("/dev/kg-missing", "/bound", mi)
    assert not st.mounted and "bind mount of /sub" in st.conflict
    assert mount_state("/dev/kg-other", "/nowhere", mi) == mount_state("/dev/kg-other", "/nowhere", mi)
    assert not mount_state("/dev/kg-other", "/nowhere", mi).conflict
    assert sorted(device_mount_points("/dev/kg-missing", mi)) == ["/bound", "/data 1"]


def test_major_minor_wins_over_the_name(tmp_path: Path) -> None:
    # A block device node whose major:minor is the root fs's: found at "/" whatever the source says.
    dev = _os.device_number("/dev/vda") if os.path.exists("/dev/vda") else None
    if dev != (MAJ, MIN):
        return  # no block node for the root fs here; the source-name path is covered above
    assert mount_state("/dev/vda", "/", write(tmp_path)).mounted
