"""The one small façade between kagemusha and the operating system.

Drivers and monitors call these functions instead of reaching for netlink,
``mount(8)``, ``fsck(8)``, ``arping(8)`` or ``kill(2)`` themselves, so the
OS-touching code sits in one file and everything above it can be read (and
faked) apart from it.

Every call acts in the *calling process's* namespaces: the network namespace
for netlink and ARP, the mount namespace for mountinfo, mount and umount. The
agent runs inside its node's namespaces, so that is the node's view.

Everything that may wait is ``async`` and cancellable: a cancelled command is
killed with its process group; blocking syscalls (``umount2``, the ``/proc``
walk for holders) run in a worker thread. Reading ``/proc/self/mountinfo`` and
``stat`` of a device node never touch a disk and stay synchronous.

Errors: a missing binary raises ``FileNotFoundError`` from ``run``; a missing
interface raises ``NoSuchInterface``; commands report their exit status in a
``CommandResult`` and never raise for a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import psutil
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kagemusha._aio import within

__all__ = [
    "ArpPort",
    "CommandResult",
    "Holder",
    "LinkState",
    "MountEntry",
    "NoSuchInterface",
    "add_address",
    "arp_announce",
    "arp_probe",
    "device_number",
    "find_holders",
    "fsck",
    "kill_holders",
    "link_state",
    "list_addresses",
    "mount",
    "read_mountinfo",
    "remove_address",
    "run",
    "umount",
    "which",
]


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def summary(self) -> str:
        """One line for an error message: the command, its status and its last stderr line."""
        out = (self.stderr.strip() or self.stdout.strip()).splitlines()
        tail = out[-1] if out else ""
        return f"{' '.join(self.argv)} exited {self.returncode}" + (f": {tail}" if tail else "")


def which(name: str) -> str | None:
    """Path of an executable, also looking in the sbin directories a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


async def run(argv: Sequence[str], *, input: bytes | None = None) -> CommandResult:
    """Run a command and collect its output; never raises for a non-zero exit.

    The command runs in a session of its own; if the caller is cancelled (its
    timeout fired), the whole process group is killed before the
    ``CancelledError`` propagates, so nothing is left running.

    Raises:
        FileNotFoundError: the executable does not exist here.
    """
    exe = which(argv[0]) if "/" not in argv[0] else argv[0]
    if exe is None:
        raise FileNotFoundError(f"{argv[0]}: command not found")
    env = {**os.environ, "LC_ALL": "C"}
    proc = await asyncio.create_subprocess_exec(
        exe,
        *argv[1:],
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    try:
        out, err = await proc.communicate(input)
    except BaseException:
        # NB: cancellation (a caller's timeout) must not leave fsck or mount behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    return CommandResult(
        tuple(argv), proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )


# ---------------------------------------------------------------- netlink


class NoSuchInterface(LookupError):
    """The named network interface does not exist in this network namespace."""


@dataclass(frozen=True, slots=True)
class LinkState:
    ifname: str
    index: int
    admin_up: bool
    carrier: bool
    operstate: str


async def _index(ipr: AsyncIPRoute, ifname: str) -> int:
    found = await ipr.link_lookup(ifname=ifname)
    if not found:
        raise NoSuchInterface(ifname)
    return int(found[0])


async def link_state(ifname: str) -> LinkState:
    """State of one interface.

    Raises:
        NoSuchInterface.
    """
    async with AsyncIPRoute() as ipr:
        index = await _index(ipr, ifname)
        async for msg in await ipr.link("dump", index=index):
            if msg["index"] != index:
                continue
            flags = int(msg["flags"])
            return LinkState(
                ifname=ifname,
                index=index,
                admin_up=bool(flags & 0x1),  # IFF_UP
                carrier=bool(msg.get("IFLA_CARRIER", 0)),
                operstate=str(msg.get("IFLA_OPERSTATE", "UNKNOWN")),
            )
    raise NoSuchInterface(ifname)


async def list_addresses(ifname: str) -> list[IPv4Interface]:
    """The IPv4 addresses (with prefix length) the kernel has on ``ifname``.

    Raises:
        NoSuchInterface.
    """
    result: list[IPv4Interface] = []
    async with AsyncIPRoute() as ipr:
        index = await _index(ipr, ifname)
        async for msg in await ipr.addr("dump", index=index):
            if msg["index"] != index or msg["family"] != 2:  # AF_INET
                continue
            addr = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if addr:
                result.append(IPv4Interface(f"{addr}/{msg['prefixlen']}"))
    return result


async def add_address(ifname: str, address: IPv4Interface) -> bool:
    """Add ``address`` to ``ifname``; False when it was already there.

    Raises:
        NoSuchInterface; NetlinkError for any other refusal.
    """
    async with AsyncIPRoute() as ipr:
        index = await _index(ipr, ifname)
        try:
            await ipr.addr(
                "add",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                broadcast=str(address.network.broadcast_address),
            )
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise
    return True


async def remove_address(ifname: str, address: IPv4Interface) -> bool:
    """Remove ``address`` from ``ifname``; False when it was not there (or the interface is gone).

    Raises:
        NetlinkError: the kernel refused for another reason.
    """
    async with AsyncIPRoute() as ipr:
        try:
            index = await _index(ipr, ifname)
        except NoSuchInterface:
            return False
        try:
            await ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ESRCH):
                return False
            raise
    return True


# ---------------------------------------------------------------- ARP (raw AF_PACKET socket)
#
# NB: iputils arping (20221126, Debian 12) takes -w and -i in whole seconds only,
# so three gratuitous ARPs cost 3 s of failover and a duplicate check 1 s. A raw
# AF_PACKET socket on the asyncio loop does both in fractions of a second, needs
# no binary, and acts in the caller's network namespace like the netlink calls.

_ETH_P_ARP = 0x0806
_PACKET_OUTGOING = 4
_BROADCAST = b"\xff" * 6


def _arp_frame(src_mac: bytes, op: int, sender_ip: bytes, target_ip: bytes) -> bytes:
    eth = _BROADCAST + src_mac + _ETH_P_ARP.to_bytes(2, "big")
    arp = (
        (1).to_bytes(2, "big") + (0x0800).to_bytes(2, "big") + bytes([6, 4]) + op.to_bytes(2, "big")
        + src_mac + sender_ip + b"\x00" * 6 + target_ip
    )
    return (eth + arp).ljust(60, b"\x00")


def _arp_socket(ifname: str) -> tuple[socket.socket, bytes]:
    # NB: opened with protocol 0, then bound to (ifname, ETH_P_ARP). A packet socket opened with a
    # protocol is hooked on every interface at once, and binding it to one interface unhooks it
    # first, which waits for the kernel's RCU grace period (synchronize_net: 8-18 ms on the test
    # machine, in the failover path); opened with 0 it is hooked once, by the bind, at no such cost.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((ifname, _ETH_P_ARP))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            raise NoSuchInterface(ifname) from exc
        raise
    sock.setblocking(False)
    mac = sock.getsockname()[4]
    return sock, bytes(mac)


class ArpPort:
    """A raw ARP socket on one interface, for a duplicate-address probe and the announcements after it.

    One socket serves both (a floating IP's start opens one, not two), and ``close`` hands the
    close to a worker thread without waiting for it: closing a packet socket waits for the kernel's
    RCU grace period (8-16 ms here), which would otherwise stall the agent's event loop in the
    middle of a failover.

    Raises (constructor):
        NoSuchInterface; OSError when the socket cannot be opened.
    """

    def __init__(self, ifname: str) -> None:
        self.sock: socket.socket | None
        self.sock, self.mac = _arp_socket(ifname)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            sock.close()
            return
        loop.run_in_executor(None, sock.close)

    async def probe(self, address: IPv4Address, *, count: int, timeout: float) -> str | None:
        """Ask the link whether another host uses ``address`` (RFC 5227 probe, sender IP 0.0.0.0).

        Sends ``count`` probes spread over ``timeout`` seconds and listens until ``timeout`` has passed.

        Returns:
            The MAC address (``aa:bb:..``) of a host that claims ``address``, or None.
        """
        sock, mac = self._open(), self.mac
        loop = asyncio.get_running_loop()
        target = address.packed
        probe = _arp_frame(mac, 1, b"\x00" * 4, target)
        count = max(count, 1)
        start = loop.time()
        sends = [start + i * timeout / count for i in range(count)]
        deadline = start + timeout
        while True:
            now = loop.time()
            while sends and sends[0] <= now:
                sends.pop(0)
                await loop.sock_sendall(sock, probe)
            if now >= deadline:
                return None
            wait = min([deadline, *sends[:1]]) - now
            try:
                data, addr = await within(loop.sock_recvfrom(sock, 128), wait)
            except TimeoutError:
                continue
            if addr[2] == _PACKET_OUTGOING or len(data) < 42:
                continue
            sha, spa, tpa = data[22:28], data[28:32], data[38:42]
            if sha == mac:
                continue
            # A reply or announcement from the address, or another host probing for it at the same time.
            if spa == target or (spa == b"\x00" * 4 and tpa == target and data[20:22] == b"\x00\x01"):
                return ":".join(f"{b:02x}" for b in sha)

    async def announce(self, address: IPv4Address, *, count: int, interval: float) -> None:
        """Send ``count`` gratuitous ARP requests (sender = target = ``address``), ``interval`` s apart.

        Neighbours that cache ``address`` update it to this interface's MAC at once.
        """
        sock = self._open()
        loop = asyncio.get_running_loop()
        frame = _arp_frame(self.mac, 1, address.packed, address.packed)
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            await loop.sock_sendall(sock, frame)

    def _open(self) -> socket.socket:
        if self.sock is None:
            raise OSError(errno.EBADF, "ARP socket already closed")
        return self.sock


async def arp_probe(ifname: str, address: IPv4Address, *, count: int = 3, timeout: float = 0.6) -> str | None:
    """``ArpPort.probe`` on a socket of its own.

    Raises:
        NoSuchInterface; OSError when the socket cannot be opened.
    """
    port = ArpPort(ifname)
    try:
        return await port.probe(address, count=count, timeout=timeout)
    finally:
        port.close()


async def arp_announce(ifname: str, address: IPv4Address, *, count: int = 3, interval: float = 0.1) -> None:
    """``ArpPort.announce`` on a socket of its own (nothing when ``count`` <= 0).

    Raises:
        NoSuchInterface; OSError when the socket cannot be opened or sent on.
    """
    if count <= 0:
        return
    port = ArpPort(ifname)
    try:
        await port.announce(address, count=count, interval=interval)
    finally:
        port.close()


# ---------------------------------------------------------------- mounts


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One line of ``/proc/<pid>/mountinfo`` (see proc(5))."""

    mount_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mountinfo(path: str | Path = "/proc/self/mountinfo") -> list[MountEntry]:
    """Parse the mount table of this process's mount namespace."""
    entries = []
    for line in Path(path).read_text().splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        r = right.split()
        major, _, minor = f[2].partition(":")
        entries.append(
            MountEntry(
                mount_id=int(f[0]),
                major=int(major),
                minor=int(minor),
                root=_unescape(f[3]),
                mount_point=_unescape(f[4]),
                options=f[5],
                fstype=r[0] if r else "",
                source=_unescape(r[1]) if len(r) > 1 else "",
                super_options=r[2] if len(r) > 2 else "",
            )
        )
    return entries


def device_number(device: str | Path) -> tuple[int, int] | None:
    """``(major, minor)`` of a block device node; None when missing or not a block device."""
    try:
        st = os.stat(device)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


async def mount(device: str, mount_point: str, *, fstype: str, options: str = "") -> CommandResult:
    """``mount -t fstype [-o options] device mount_point`` (mount(8) parses the options)."""
    argv = ["mount", "-t", fstype]
    if options:
        argv += ["-o", options]
    return await run([*argv, device, mount_point])


async def fsck(device: str, *, fstype: str, options: Sequence[str] = ("-p",)) -> CommandResult:
    """``fsck -T -t fstype <options> device``; see fsck(8) for the exit status bits."""
    return await run(["fsck", "-T", "-t", fstype, *options, device])


_libc = ctypes.CDLL(None, use_errno=True)
_MNT_FORCE = 1
_MNT_DETACH = 2


def _umount2(target: str, flags: int) -> int:
    if _libc.umount2(os.fsencode(target), flags) == 0:
        return 0
    return ctypes.get_errno()


async def umount(mount_point: str, *, lazy: bool = False) -> int:
    """Unmount ``mount_point`` with umount2(2).

    Returns:
        0 on success, else the errno (``EBUSY`` when busy, ``EINVAL`` when not a mount point).
    """
    # A umount flushes dirty pages and may take a while: keep it off the event loop.
    return await asyncio.to_thread(_umount2, mount_point, _MNT_DETACH if lazy else 0)


# ---------------------------------------------------------------- processes holding a mount


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    name: str
    why: str  # "cwd", "root", "exe", "fd 3 /data1/x", "map /data1/lib.so"


def _under(path: str, mount_point: str) -> bool:
    path = path.removesuffix(" (deleted)")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def _ns_inode(pid: int | str, ns: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino
    except OSError:
        return None


def _on_dev(link: str, dev: int | None) -> bool:
    """Whether the file behind a /proc magic link lives on device ``dev`` (None: cannot tell, say yes)."""
    if dev is None:
        return True
    try:
        return os.stat(link).st_dev == dev
    except OSError:
        return False


def _holds(pid: int, mount_point: str, dev: int | None) -> str | None:
    """Why ``pid`` keeps ``mount_point`` (file system on ``dev``) busy, or None."""
    base = f"/proc/{pid}"
    for what in ("cwd", "root", "exe"):
        try:
            target = os.readlink(f"{base}/{what}")
        except OSError:
            continue
        if what == "root" and target == "/":
            continue
        if _under(target, mount_point) and _on_dev(f"{base}/{what}", dev):
            return what
    try:
        fds = os.listdir(f"{base}/fd")
    except OSError:
        fds = []
    for fd in fds:
        try:
            target = os.readlink(f"{base}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/") and _under(target, mount_point) and _on_dev(f"{base}/fd/{fd}", dev):
            return f"fd {fd} {target}"
    try:
        for m in psutil.Process(pid).memory_maps(grouped=True):
            if m.path.startswith("/") and _under(m.path, mount_point):
                return f"map {m.path}"
    except (psutil.Error, OSError):
        pass
    return None


def find_holders(mount_point: str) -> list[Holder]:
    """Processes of *this* mount namespace that keep ``mount_point`` busy.

    Looks at each process's cwd, root, exe, open file descriptors and memory
    maps: the path must lie under ``mount_point`` and the file must be on the
    file system mounted there (its ``st_dev``; so a process whose cwd is the
    directory the mount covers is not a holder). NB: only processes in the
    caller's mount namespace count: a process in another namespace that has a
    path with the same name sees a different mount (another node in the test
    harness) and must never be killed for ours. Blocking (walks ``/proc``):
    call through ``kill_holders`` or a thread.
    """
    mine = _ns_inode("self", "mnt")
    me = os.getpid()
    tops = [e for e in read_mountinfo() if e.mount_point == mount_point]
    dev = os.makedev(tops[-1].major, tops[-1].minor) if tops else None
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        pid = proc.info["pid"]
        if pid == me or _ns_inode(pid, "mnt") != mine:
            continue
        why = _holds(pid, mount_point, dev)
        if why:
            found.append(Holder(pid, proc.info["name"] or "?", why))
    return found


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def kill_holders(mount_point: str, *, grace: float = 2.0) -> list[Holder]:
    """Kill the processes that keep ``mount_point`` busy: SIGTERM, then SIGKILL after ``grace`` s.

    ``grace=0`` sends SIGKILL at once (fencing). Returns the holders found
    first. Never kills the calling process.
    """
    holders = await asyncio.to_thread(find_holders, mount_point)
    if not holders:
        return []
    pids = {h.pid for h in holders}
    if grace > 0:
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids = {p for p in pids if psutil.pid_exists(p) and _alive(p)}
            if not pids:
                return holders
            await asyncio.sleep(0.05)
    _signal_all(pids, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        if pids:
            await asyncio.sleep(0.01)
    return holders


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
