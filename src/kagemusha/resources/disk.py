"""``disk``: the switchover disk (the seed's ``sd1`` on ``/data1``).

Usage in ``cluster.toml``::

    [[groups.resources]]
    name = "sd1"
    type = "disk"
    device = "/dev/sdb1"
    mount_point = "/data1"
    fstype = "ext4"          # default
    fsck = "every 10"        # "always", "never" or "every N" mounts; default "every 10"
    options = "noatime"      # mount -o

``start`` runs fsck when due, creates the mount point and mounts. ``stop``
unmounts the device (from the mount point, and from any other path it is
mounted at on this node); when busy it kills the processes that keep it busy
(only those whose cwd, root, executable, open files or memory maps lie under
the mount point, and only in this mount namespace), SIGTERM first and SIGKILL
after ``kill_grace`` seconds, then unmounts again. ``fence`` kills them with
SIGKILL at once and detaches the mount lazily if it is still busy. ``probe``
reads ``/proc/self/mountinfo``, matching the device by major:minor.

Its start result is what the group's exec resources see as ``CLP_DISK``
(``is_disk = True``).

fsck: the count of mounts since the last fsck is kept per node in the
resource's state directory; with ``every N`` fsck runs before a mount when N
mounts have happened since the last one (and when the count is unknown, e.g.
the first start on a node). A failed mount is retried once after an fsck
unless ``fsck = "never"``. Exit status per fsck(8): 0, 1 and 2 are fine; 4
(errors left) and 8 (operational error) fail the start; 16 (usage) means the
parameters are wrong; 128 means fsck is broken here.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from pydantic import Field, field_validator

from kagemusha import _os
from kagemusha.errors import NotConfigured, NotInstalled, ResourceFailed
from kagemusha.resources._base import DriverParams, Probe, Resource, ResourceContext, StartEnv

__all__ = ["Disk", "DiskParams", "MountState", "device_mount_points", "mount_state"]

_EVERY = re.compile(r"^every\s+([1-9][0-9]*)$")


class DiskParams(DriverParams):
    """Parameters of a ``disk`` resource."""

    #: Block device, e.g. ``/dev/sdb1`` or ``/dev/disk/by-uuid/...``.
    device: str = Field(min_length=1)
    #: Absolute path where it is mounted, e.g. ``/data1``. Created when missing.
    mount_point: str = Field(min_length=2)
    fstype: str = Field(default="ext4", pattern=r"^[a-z0-9_.]+$")
    #: ``always``, ``never`` or ``every N`` (mounts between checks).
    fsck: str = "every 10"
    #: Options for fsck(8) after ``-t fstype``; ``-p`` repairs what is safe and stops otherwise.
    fsck_options: str = "-p"
    #: mount(8) ``-o`` options, comma-separated.
    options: str = ""
    #: Seconds between SIGTERM and SIGKILL for processes that keep the mount busy on stop.
    kill_grace: float = Field(default=2.0, ge=0.0, le=300.0)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("give the device as an absolute path, e.g. /dev/sdb1")
        return os.path.normpath(v)

    @field_validator("mount_point")
    @classmethod
    def _mount_point(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be an absolute path, e.g. /data1")
        v = os.path.normpath(v)
        if v == "/" or v.startswith("//"):
            raise ValueError("cannot be the root directory")
        return v

    @field_validator("fsck")
    @classmethod
    def _fsck(cls, v: str) -> str:
        v = " ".join(v.split()).lower()
        if v in ("always", "never") or _EVERY.match(v):
            return v
        raise ValueError('must be "always", "never" or "every N" (N >= 1), e.g. "every 10"')

    @field_validator("fsck_options")
    @classmethod
    def _fsck_options(cls, v: str) -> str:
        shlex.split(v)
        return v

    def fsck_every(self) -> int | None:
        """Mounts between fscks: 1 for ``always``, None for ``never``."""
        if self.fsck == "never":
            return None
        if self.fsck == "always":
            return 1
        m = _EVERY.match(self.fsck)
        assert m
        return int(m.group(1))


@dataclass(frozen=True, slots=True)
class MountState:
    """What the mount table says about one device and mount point."""

    mounted: bool  # the device is mounted at the mount point (top of the stack)
    conflict: str  # non-empty: the device is elsewhere, or something else sits on the mount point


def mount_state(device: str, mount_point: str, mountinfo: str = "/proc/self/mountinfo") -> MountState:
    """Read the mount table of this mount namespace for ``device`` at ``mount_point``."""
    entries = _os.read_mountinfo(mountinfo)
    dev = _os.device_number(device)

    def is_dev(e: _os.MountEntry) -> bool:
        # NB: major:minor is the truth; the source string only when the node is gone (device hidden).
        if dev is not None:
            return (e.major, e.minor) == dev
        return e.source == device

    at_mp = [e for e in entries if e.mount_point == mount_point]
    if at_mp:
        top = at_mp[-1]
        if is_dev(top):
            if top.root != "/":
                return MountState(False, f"{mount_point} is a bind mount of {top.root} on {top.source}")
            return MountState(True, "")
        return MountState(False, f"{mount_point} has {top.source} ({top.fstype}) mounted, not {device}")
    elsewhere = [e.mount_point for e in entries if is_dev(e)]
    if elsewhere:
        return MountState(False, f"{device} is mounted at {', '.join(elsewhere)}, not at {mount_point}")
    return MountState(False, "")


def device_mount_points(device: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Where ``device`` is mounted in this mount namespace, deepest (and latest) first."""
    entries = _os.read_mountinfo(mountinfo)
    dev = _os.device_number(device)
    found = [
        e.mount_point
        for e in entries
        if ((e.major, e.minor) == dev if dev is not None else e.source == device)
    ]
    seen: list[str] = []
    for mp in reversed(found):
        if mp not in seen:
            seen.append(mp)
    return sorted(seen, key=lambda m: m.count("/"), reverse=True)


class Disk(Resource):
    """A file system on a shared block device, mounted by at most one node."""

    type_name = "disk"
    Params = DiskParams
    is_disk: ClassVar[bool] = True
    independent: ClassVar[bool] = True
    default_start_timeout: ClassVar[float] = 300.0  # fsck of a large disk takes a while
    default_stop_timeout: ClassVar[float] = 60.0

    params: DiskParams

    def __init__(self, params: DriverParams, ctx: ResourceContext) -> None:
        if not isinstance(params, DiskParams):
            raise NotConfigured(f"disk: expected DiskParams, got {type(params).__name__}")
        super().__init__(params, ctx)

    def needs(self, earlier: Resource) -> bool:
        """A mount point inside (or above) another disk's needs that disk mounted first (and unmounted last)."""
        if not isinstance(earlier, Disk):
            return False
        a, b = PurePosixPath(self.params.mount_point), PurePosixPath(earlier.params.mount_point)
        return a == b or a.is_relative_to(b) or b.is_relative_to(a)

    # -- state

    @property
    def _count_file(self) -> Path:
        # NB: the state directory is the group's, shared by its resources: name the file by resource.
        return self.ctx.state_dir / f"{self.ctx.resource}.mounts-since-fsck"

    def _mounts_since_fsck(self) -> int | None:
        try:
            return int(self._count_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _set_mounts_since_fsck(self, n: int) -> None:
        try:
            self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._count_file.with_suffix(".tmp")
            tmp.write_text(f"{n}\n")
            tmp.replace(self._count_file)
        except OSError as exc:
            self.ctx.log.warning("disk %s: cannot record mount count: %s", self.params.device, exc)

    def _fsck_due(self) -> bool:
        every = self.params.fsck_every()
        if every is None:
            return False
        if every == 1:
            return True
        done = self._mounts_since_fsck()
        return done is None or done >= every

    # -- operations

    def _state(self) -> MountState:
        try:
            return mount_state(self.params.device, self.params.mount_point)
        except OSError as exc:
            raise ResourceFailed(f"disk {self.params.device}: cannot read the mount table: {exc}") from exc

    async def _fsck(self) -> None:
        p = self.params
        try:
            res = await _os.fsck(p.device, fstype=p.fstype, options=shlex.split(p.fsck_options))
        except FileNotFoundError as exc:
            raise NotInstalled(f"disk {p.device}: fsck is not installed on this node") from exc
        rc = res.returncode
        if rc & 128:
            raise NotInstalled(f"disk {p.device}: fsck is broken on this node: {res.summary()}")
        if rc & 16:
            raise NotConfigured(f"disk {p.device}: fsck rejected its options: {res.summary()}")
        if rc & 4:
            raise ResourceFailed(f"disk {p.device}: fsck left errors uncorrected (run fsck by hand): {res.summary()}")
        if rc & (8 | 32):
            raise ResourceFailed(f"disk {p.device}: fsck could not check it: {res.summary()}")
        self._set_mounts_since_fsck(0)
        self.ctx.log.info("disk %s: fsck done (status %d)", p.device, rc)

    async def start(self, env: StartEnv) -> None:
        p = self.params
        state = self._state()
        if state.mounted:
            self.ctx.log.info("disk %s already mounted at %s", p.device, p.mount_point)
            return
        if state.conflict:
            raise ResourceFailed(f"disk: {state.conflict}")
        if not os.path.exists(p.device):
            raise NotInstalled(f"disk: device {p.device} does not exist on this node")
        if _os.device_number(p.device) is None:
            raise ResourceFailed(f"disk: {p.device} is not a block device here")
        fsck_ran = False
        if self._fsck_due():
            await self._fsck()
            fsck_ran = True
        try:
            os.makedirs(p.mount_point, exist_ok=True)
        except OSError as exc:
            raise ResourceFailed(f"disk: cannot create mount point {p.mount_point}: {exc}") from exc
        try:
            res = await _os.mount(p.device, p.mount_point, fstype=p.fstype, options=p.options)
            if not res.ok and not fsck_ran and p.fsck_every() is not None:
                self.ctx.log.warning("disk %s: mount failed (%s); running fsck and retrying", p.device, res.summary())
                await self._fsck()
                res = await _os.mount(p.device, p.mount_point, fstype=p.fstype, options=p.options)
        except FileNotFoundError as exc:
            raise NotInstalled("disk: mount(8) is not installed on this node") from exc
        if not res.ok:
            raise ResourceFailed(f"disk: cannot mount {p.device} at {p.mount_point}: {res.summary()}")
        if not self._state().mounted:
            raise ResourceFailed(f"disk: mount said yes but {p.device} is not at {p.mount_point}")
        self._set_mounts_since_fsck((self._mounts_since_fsck() or 0) + 1)
        self.ctx.log.info("disk %s mounted at %s", p.device, p.mount_point)

    async def stop(self, env: StartEnv) -> None:
        await self._unmount(grace=self.params.kill_grace, lazy_last=False)

    async def fence(self) -> None:
        # NB: never a lazy unmount here: a lazily detached file system stays live while a holder
        # writes to it, which is how split brain on a disk starts. Kill the holders, unmount for
        # real, and prove the device is released; otherwise the fence is incomplete and retried.
        await self._unmount(grace=0.0, lazy_last=False)
        await asyncio.to_thread(self._check_released)

    def _check_released(self) -> None:
        """Prove no mount of the device is left in any mount namespace of this node.

        The mount tables of every mount namespace used by a process of this node (this network
        namespace) are read: a copy of the mount held by a process in a private mount namespace
        (``unshare -m``), or left by a lazy unmount that another namespace still sees, keeps the file
        system live. NB: not an exclusive open of the device: on one kernel shared by several nodes (the
        test harness) that would also see the mount of the node that took the group over.
        """
        dev = _os.device_number(self.params.device)
        if dev is None:
            return
        seen: set[int] = set()
        held: list[str] = []
        try:
            net = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            net = None
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if net is not None and os.stat(f"/proc/{entry.name}/ns/net").st_ino != net:
                    continue
                mnt = os.stat(f"/proc/{entry.name}/ns/mnt").st_ino
                if mnt in seen:
                    continue
                seen.add(mnt)
                mounts = _os.read_mountinfo(f"/proc/{entry.name}/mountinfo")
            except OSError:
                continue  # the process went away meanwhile
            held += [f"{m.mount_point} (seen by pid {entry.name})" for m in mounts if (m.major, m.minor) == dev]
        if held:
            raise ResourceFailed(
                f"disk {self.params.device}: still in use after unmounting: mounted at {', '.join(held[:3])}"
            )

    def _device_mounts(self) -> list[str]:
        """Every mount point of the device in this mount namespace, deepest first."""
        try:
            return device_mount_points(self.params.device)
        except OSError as exc:
            raise ResourceFailed(f"disk {self.params.device}: cannot read the mount table: {exc}") from exc

    async def _unmount(self, *, grace: float, lazy_last: bool) -> None:
        """Unmount the device from wherever it is mounted on this node.

        NB: not only from ``mount_point``: a stop that left the device mounted
        at another path would let the group start on another node while this
        one can still write to the disk.
        """
        p = self.params
        attempts = 6
        for attempt in range(attempts):
            mps = self._device_mounts()
            if not mps:
                return
            for mp in mps:
                if mp != p.mount_point:
                    self.ctx.log.warning("disk %s is also mounted at %s: unmounting it there", p.device, mp)
                await self._unmount_below(mp)
                err = await _os.umount(mp)
                if err in (0, errno.EINVAL):
                    continue
                if err != errno.EBUSY:
                    raise ResourceFailed(f"disk: cannot unmount {mp}: {os.strerror(err)}")
                # Busy: first ask the holders to go, then insist.
                holders = await _os.kill_holders(mp, grace=grace if attempt == 0 else 0.0)
                if holders:
                    self.ctx.log.warning(
                        "disk %s busy; killed %s", mp, ", ".join(f"{h.pid} ({h.name}: {h.why})" for h in holders)
                    )
                elif not lazy_last:
                    # A holder that just exited may still be releasing its files.
                    await asyncio.sleep(0.05 * (attempt + 1))
            if lazy_last and attempt >= 1:
                break
        left = self._device_mounts()
        if lazy_last:
            for mp in left:
                err = await _os.umount(mp, lazy=True)
                if err not in (0, errno.EINVAL):
                    raise ResourceFailed(f"disk: cannot detach {mp}: {os.strerror(err)}")
                self.ctx.log.warning("disk %s: detached lazily from %s", p.device, mp)
            return
        if left:
            holders = [h for mp in left for h in await asyncio.to_thread(_os.find_holders, mp)]
            who = ", ".join(f"{h.pid} ({h.name}: {h.why})" for h in holders) or "no process found"
            raise ResourceFailed(f"disk: {', '.join(left)} still busy after {attempts} attempts: {who}")

    async def _unmount_below(self, mount_point: str) -> None:
        """Unmount whatever is mounted below ``mount_point`` (deepest first)."""
        prefix = mount_point.rstrip("/") + "/"
        below = [e.mount_point for e in _os.read_mountinfo() if e.mount_point.startswith(prefix)]
        for mp in reversed(below):
            await _os.umount(mp, lazy=True)

    async def probe(self) -> Probe:
        try:
            state = mount_state(self.params.device, self.params.mount_point)
        except OSError as exc:
            return Probe.failed(f"cannot read the mount table: {exc}")
        if state.mounted:
            return Probe.running(f"{self.params.device} at {self.params.mount_point}")
        if state.conflict:
            return Probe.failed(state.conflict)
        return Probe.stopped(f"{self.params.device} not mounted")
