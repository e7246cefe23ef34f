"""End-to-end harness: cluster nodes as network + mount namespaces on one host (root only).

What it builds, all under a unique prefix (``kg`` + 6 hex digits)::

    netns <prefix>-bridge   br0 198.18.0.1/24   (the "switch"; run a shared etcd here)
      ├── veth ── netns <prefix>-n1      eth0 198.18.0.11/24
      ├── veth ── netns <prefix>-n2      eth0 198.18.0.12/24
      ├── ...                            .13, .14, ...
      └── veth ── netns <prefix>-client  eth0 198.18.0.200/24
    VIPs for the tests: 198.18.0.100/24 (``h.vip``), .101, ... (``h.vips(2)``)
    a shared disk: sparse image in ``h.tmp``, one loop device (``h.disk.device``), ext4

Every namespace above also has a mount namespace of its own (held by an
"anchor" ``sleep infinity`` process started with ``ip netns exec``, which also
gives it a sysfs of its netns), so a mount made on n1 is seen only by n1,
as on separate machines. Processes enter a node with ``nsenter --net --mount``
through ``h.run``/``h.popen``/``h.python``. IPv6 is off in every namespace, so
nothing but 198.18.0.0/15 (and 127.0.0.1) is ever on the wire.

Usage::

    from kagemusha.testing.netns import Harness

    with Harness(["n1", "n2"]) as h:
        agent = h.popen("n1", ["kagemusha", "agent", "--node", "n1"], env={"X": "1"})
        h.run("client", ["curl", "-s", f"http://{h.vip.ip}:8080/"])
        h.crash("n1")              # power cut: kill all, link down, mounts and addresses gone
        assert h.vip_holders() == ["n2"]
        h.revive("n1")             # link up again, clean node

Teardown (``close``, run by the ``with`` block, ``atexit``, and SIGTERM/SIGHUP
while the harness lives) kills every process in the namespaces, unmounts what
nodes mounted, detaches the loop devices and deletes the namespaces. A
harness whose owner was SIGKILLed is cleaned up by the next harness (or by
``python -m kagemusha.testing.netns --cleanup``), from the record it keeps
in ``/run/kagemusha-testing/``.

Simulation limits (NB): the disk is *one* kernel block device, so a second
mount of it on another node shares the same super block instead of
corrupting it; assert exclusivity with ``h.disk_holders()``. ``e2fsck`` on
one node refuses a device mounted on another ("in use"), which real shared
storage would not.

The root namespace's interfaces, addresses and routes are never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import psutil

from kagemusha import _os

__all__ = [
    "Harness",
    "HarnessUnavailable",
    "LoopDisk",
    "NsNode",
    "cleanup_stale",
    "require",
    "unavailable_reason",
]

ALLOWED = IPv4Network("198.18.0.0/15")
RECORDS = Path("/run/kagemusha-testing")
_TOOLS = ("ip", "nsenter", "losetup", "mount", "umount", "sleep", "truncate")


class HarnessUnavailable(RuntimeError):
    """The harness cannot run here (not root, a tool missing, namespaces refused)."""


@dataclass(frozen=True, slots=True)
class NsNode:
    """One namespace of the harness: a cluster node, the client or the bridge."""

    name: str  # "n1", "client", "bridge"
    netns: str  # kernel name, e.g. "kg1a2b3c-n1" (``ip netns list``)
    ifname: str  # "eth0" ("br0" in the bridge namespace)
    address: IPv4Interface  # e.g. 198.18.0.11/24
    anchor_pid: int  # the process that holds the mount namespace


@dataclass(frozen=True, slots=True)
class LoopDisk:
    """A shared disk: one loop device over a sparse image, formatted."""

    device: str  # /dev/loopN
    image: Path
    size_mb: int
    fstype: str


def unavailable_reason(fstype: str = "ext4") -> str | None:
    """Why the harness cannot run on this host, or None when it can."""
    if os.geteuid() != 0:
        return "the netns harness needs root (network namespaces, mounts, loop devices)"
    missing = [t for t in (*_TOOLS, f"mkfs.{fstype}") if _os.which(t) is None]
    if missing:
        return f"the netns harness needs {', '.join(missing)} (Debian: iproute2, util-linux, e2fsprogs)"
    if not Path("/dev/loop-control").exists():
        return "the netns harness needs loop devices (/dev/loop-control missing)"
    return None


def require(fstype: str = "ext4") -> None:
    """In a pytest test: skip with the reason when the harness cannot run; fail instead when ``CI=true``."""
    import pytest

    reason = unavailable_reason(fstype)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: root tests must run, not skip)")
    pytest.skip(reason)


# ---------------------------------------------------------------- helpers


def _sh(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise HarnessUnavailable(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def _ns_ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _pids_in(net_inodes: set[int], mnt_inodes: set[int]) -> list[int]:
    """Every process whose network or mount namespace is one of ours."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if _ns_ino(f"/proc/{entry}/ns/net") in net_inodes or _ns_ino(f"/proc/{entry}/ns/mnt") in mnt_inodes:
            found.append(int(entry))
    return found


def _sigkill(pids: Iterable[int]) -> None:
    """SIGKILL each of ``pids`` (gone ones are skipped); does not wait."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _kill_and_wait(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are gone (or zombies); returns the survivors."""
    left = set(pids)
    _sigkill(left)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    left.discard(pid)
            except psutil.Error:
                left.discard(pid)
        if left:
            time.sleep(0.01)
    return sorted(left)


def _loop_backing(device: str) -> str | None:
    try:
        return Path(f"/sys/block/{Path(device).name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def _detach_loop(device: str, image: Path) -> str | None:
    """Detach ``device`` if it still maps ``image``; returns a problem or None."""
    backing = _loop_backing(device)
    if backing is None or backing.removesuffix(" (deleted)") != str(image):
        return None
    _sh(["losetup", "-d", device], check=False)
    # NB: a busy loop device is only marked autoclear; it goes once its last user closes it.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if _loop_backing(device) is None:
            return None
        time.sleep(0.02)
    return f"loop device {device} still attached to {image}"


# ---------------------------------------------------------------- live harnesses (atexit / signals)

_live: weakref.WeakSet[Harness] = weakref.WeakSet()
_old_handlers: dict[int, Any] = {}
_lock = threading.Lock()


def _close_all() -> None:
    for h in list(_live):
        with contextlib.suppress(Exception):
            h.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP: tear every live harness down, then die of the signal as we would have.
    # NB: not an exception: pytest would count a SystemExit as one failed test and go on.
    _close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if sig in _old_handlers:
            continue
        old = signal.getsignal(sig)
        if old in (signal.SIG_DFL, None):
            _old_handlers[sig] = old
            signal.signal(sig, _on_signal)


def _restore_handlers() -> None:
    if _live or threading.current_thread() is not threading.main_thread():
        return
    for sig, old in list(_old_handlers.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, old or signal.SIG_DFL)
        del _old_handlers[sig]


atexit.register(_close_all)


# ---------------------------------------------------------------- the harness


class Harness:
    """Nodes, a client and a bridge as namespaces, plus shared loop-device disks.

    Args:
        nodes: cluster node names (letters, digits, ``-``; up to 10 characters).
        disks: how many shared disks to create (0 = none).
        disk_size_mb: size of each (sparse) image.
        fstype: file system made on each disk.
        subnet: a /24 (or larger) inside 198.18.0.0/15.
        tmp_root: where the harness directory (images, scratch) is made; default the system tmp.

    Raises (from ``start``/``__enter__``):
        HarnessUnavailable: not root, a tool is missing, or setting up failed
        (everything made so far is removed again).
    """

    def __init__(
        self,
        nodes: Sequence[str] = ("n1", "n2"),
        *,
        disks: int = 1,
        disk_size_mb: int = 64,
        fstype: str = "ext4",
        subnet: str = "198.18.0.0/24",
        tmp_root: str | Path | None = None,
    ) -> None:
        net = IPv4Network(subnet)
        if not net.subnet_of(ALLOWED):
            raise ValueError(f"subnet {subnet} is outside {ALLOWED}: the harness only uses benchmark addresses")
        if net.prefixlen > 24:
            raise ValueError("subnet must be a /24 or larger")
        names = list(nodes)
        if len(set(names)) != len(names) or not names or len(names) > 80:
            raise ValueError("nodes must be 1 to 80 distinct names")
        for n in names:
            if n in ("client", "bridge") or not n.replace("-", "").isalnum() or len(n) > 10:
                raise ValueError(f"bad node name {n!r}: letters, digits and '-', up to 10, not client/bridge")
        self.prefix = "kg" + secrets.token_hex(3)
        self.network = net
        self.fstype = fstype
        self._node_names = names
        self._disk_count = disks
        self._disk_size_mb = disk_size_mb
        self._tmp_root = Path(tmp_root) if tmp_root else Path(tempfile.gettempdir())
        self.tmp = self._tmp_root / f"{self.prefix}.harness"
        self._ns: dict[str, NsNode] = {}
        self._anchors: dict[str, subprocess.Popen[bytes]] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self.disks: list[LoopDisk] = []
        self._started = False
        self._closed = False
        self._record = RECORDS / f"{self.prefix}.json"
        self._hidden: set[tuple[str, str]] = set()

    # -- addresses

    def _host(self, n: int) -> IPv4Interface:
        return IPv4Interface(f"{self.network.network_address + n}/{self.network.prefixlen}")

    @property
    def vip(self) -> IPv4Interface:
        """The first virtual IP for tests, e.g. ``198.18.0.100/24``."""
        return self._host(100)

    def vips(self, count: int) -> list[IPv4Interface]:
        """``count`` virtual IPs: .100, .101, ..."""
        return [self._host(100 + i) for i in range(count)]

    @property
    def nodes(self) -> dict[str, NsNode]:
        """The cluster nodes (not the client nor the bridge), by name."""
        return {n: self._ns[n] for n in self._node_names if n in self._ns}

    @property
    def client(self) -> NsNode:
        return self._ns["client"]

    @property
    def bridge(self) -> NsNode:
        """The bridge's namespace; it has 198.18.0.1 on ``br0`` (a place for a shared etcd)."""
        return self._ns["bridge"]

    @property
    def disk(self) -> LoopDisk:
        """The first shared disk."""
        return self.disks[0]

    def address(self, node: str) -> IPv4Interface:
        """The fixed address of a node, the client or the bridge."""
        return self._ns[node].address

    def __getitem__(self, node: str) -> NsNode:
        return self._ns[node]

    # -- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(raise_on_leftovers=exc_type is None)

    def start(self) -> Self:
        """Build everything; on any failure (or Ctrl-C) remove what was made and raise."""
        if self._started:
            return self
        reason = unavailable_reason(self.fstype)
        if reason:
            raise HarnessUnavailable(reason)
        cleanup_stale()
        self._started = True
        with _lock:
            _live.add(self)
            _install_handlers()
        try:
            self.tmp.mkdir(parents=True)
            self._write_record()
            self._make_bridge()
            for i, name in enumerate(self._node_names):
                self._make_member(name, self._host(11 + i))
            self._make_member("client", self._host(200))
            for i in range(self._disk_count):
                self._make_disk(i)
        except BaseException:
            self.close(raise_on_leftovers=False)
            raise
        return self

    def _write_record(self) -> None:
        RECORDS.mkdir(parents=True, exist_ok=True)
        me = psutil.Process()
        rec = {
            "owner_pid": me.pid,
            "owner_started": me.create_time(),
            "prefix": self.prefix,
            "tmp": str(self.tmp),
            "netns": [f"{self.prefix}-{n}" for n in ("bridge", *self._node_names, "client")],
            "loops": [{"device": d.device, "image": str(d.image)} for d in self.disks],
        }
        tmp = self._record.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec))
        tmp.replace(self._record)

    def _anchor(self, name: str, netns: str) -> int:
        # ip netns exec gives the process a mount namespace of its own (rslave of ours) with the
        # netns's sysfs; the sleep keeps it alive. IPv6 off first: no link-local or RS traffic.
        script = (
            "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
            " >/dev/null 2>&1; exec sleep infinity"
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._anchors[name] = proc
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep":
                    return proc.pid
            except OSError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        raise HarnessUnavailable(f"could not start the anchor process of namespace {netns}")

    def _make_bridge(self) -> None:
        ns = f"{self.prefix}-bridge"
        _sh(["ip", "netns", "add", ns])
        pid = self._anchor("bridge", ns)
        addr = self._host(1)
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        _sh(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        _sh(["ip", "-n", ns, "addr", "add", str(addr), "dev", "br0"])
        _sh(["ip", "-n", ns, "link", "set", "br0", "up"])
        self._ns["bridge"] = NsNode("bridge", ns, "br0", addr, pid)

    def _make_member(self, name: str, addr: IPv4Interface) -> None:
        ns = f"{self.prefix}-{name}"
        br = self._ns["bridge"].netns
        _sh(["ip", "netns", "add", ns])
        pid = self._anchor(name, ns)
        port = f"p-{name}"
        # The veth is created in the bridge namespace with its peer moved straight into the node:
        # nothing ever appears in the root namespace.
        _sh(["ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _sh(["ip", "-n", br, "link", "set", port, "master", "br0", "up"])
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        _sh(["ip", "-n", ns, "addr", "add", str(addr), "dev", "eth0"])
        _sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self._ns[name] = NsNode(name, ns, "eth0", addr, pid)

    def _make_disk(self, i: int) -> None:
        image = self.tmp / f"disk{i}.img"
        with open(image, "wb") as f:
            f.truncate(self._disk_size_mb * 1024 * 1024)
        dev = _sh(["losetup", "-f", "--show", str(image)]).stdout.strip()
        disk = LoopDisk(dev, image, self._disk_size_mb, self.fstype)
        self.disks.append(disk)
        self._write_record()
        mkfs = ["mkfs." + self.fstype]
        if self.fstype.startswith("ext"):
            mkfs += ["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-L", f"kgdisk{i}"]
        _sh([*mkfs, dev], timeout=120)

    def close(self, *, raise_on_leftovers: bool = False) -> list[str]:
        """Tear everything down (idempotent). Returns the problems met; raises when asked and any."""
        if self._closed or not self._started:
            return []
        self._closed = True
        problems: list[str] = []
        # 1. processes: the ones we started (by process group), then anything left in our namespaces.
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
        anchors = {a.pid for a in self._anchors.values()}
        net = {i for n in self._ns.values() if (i := _ns_ino(f"/run/netns/{n.netns}")) is not None}
        mnt = {i for pid in anchors if (i := _ns_ino(f"/proc/{pid}/ns/mnt")) is not None}
        others = [p for p in _pids_in(net, mnt) if p not in anchors]
        if left := _kill_and_wait(others):
            problems.append(f"processes would not die: {left}")
        for p in self._procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=2)
        # 2. mounts made inside the nodes' mount namespaces.
        for name in list(self._ns):
            with contextlib.suppress(Exception):
                self._unmount_all(name)
        # 3. anchors: their mount namespaces go with them.
        for a in self._anchors.values():
            with contextlib.suppress(ProcessLookupError):
                a.kill()
            with contextlib.suppress(Exception):
                a.wait(timeout=5)
        # 4. loop devices, 5. namespaces, 6. files.
        for d in self.disks:
            if err := _detach_loop(d.device, d.image):
                problems.append(err)
        for n in reversed(list(self._ns.values())):
            _sh(["ip", "netns", "del", n.netns], check=False)
        for ns_name in [f"{self.prefix}-{x}" for x in ("bridge", *self._node_names, "client")]:
            _sh(["ip", "netns", "del", ns_name], check=False)  # also the half-made ones
            if Path(f"/run/netns/{ns_name}").exists():
                problems.append(f"network namespace {ns_name} left behind")
        shutil.rmtree(self.tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._record.unlink()
        with _lock:
            _live.discard(self)
            _restore_handlers()
        if problems and raise_on_leftovers:
            raise RuntimeError("netns harness teardown: " + "; ".join(problems))
        return problems

    # -- running things inside

    def argv(self, node: str, argv: Sequence[str], *, cwd: str | Path | None = None) -> list[str]:
        """The command line that runs ``argv`` inside ``node``'s network and mount namespaces."""
        n = self._ns[node]
        wd = str(cwd) if cwd is not None else os.getcwd()
        # NB: not nsenter --wd=DIR: nsenter opens DIR *before* entering the mount namespace, so a
        # directory on a node's mount would resolve to the host's directory underneath it.
        # The shell changes directory inside the node, then execs (same pid).
        return [
            "nsenter", "-t", str(n.anchor_pid), "--net", "--mount", "--",
            "/bin/sh", "-c", 'cd -- "$0" || exit 127; exec "$@"', wd, *map(str, argv),
        ]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        out = dict(os.environ)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            out.pop(k, None)  # NB: traffic from the namespaces stays on the bridge
        if env:
            out.update(env)
        return out

    def popen(
        self,
        node: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``node`` (a node name, ``"client"`` or ``"bridge"``).

        The process gets a session (process group) of its own and is killed at
        teardown. ``env`` adds to (not replaces) the caller's environment, less
        proxy variables. Other keyword arguments go to ``subprocess.Popen``
        (default: stdin from /dev/null, output inherited).
        """
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self.argv(node, argv, cwd=cwd), env=self._env(env), start_new_session=True, **kwargs
        )
        self._procs.append(proc)
        return proc

    def run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``node`` to completion and capture its output (text).

        Raises:
            subprocess.CalledProcessError: ``check`` and a non-zero exit (stderr in the message).
            subprocess.TimeoutExpired: after ``timeout`` s; the process group has been killed.
        """
        proc = self.popen(
            node,
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._procs.remove(proc)
        res = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise _CalledProcessError(proc.returncode, list(argv), out, err, node)
        return res

    def python(
        self, node: str, code: str, *args: str, check: bool = True, timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run Python ``code`` (this interpreter, so kagemusha imports) inside ``node``."""
        return self.run(node, [sys.executable, "-c", code, *args], check=check, timeout=timeout, env=env)

    def pids(self, node: str) -> list[int]:
        """Processes inside ``node`` (its network or mount namespace), not counting the anchor."""
        n = self._ns[node]
        net = {i for i in [_ns_ino(f"/run/netns/{n.netns}")] if i is not None}
        mnt = {i for i in [_ns_ino(f"/proc/{n.anchor_pid}/ns/mnt")] if i is not None}
        return [p for p in _pids_in(net, mnt) if p != n.anchor_pid]

    # -- failures

    def link_down(self, node: str) -> None:
        """Unplug ``node``'s cable at the switch (its eth0 loses carrier; processes keep running)."""
        _sh(["ip", "-n", self.bridge.netns, "link", "set", f"p-{node}", "down"])

    def link_up(self, node: str) -> None:
        """Plug ``node``'s cable back in."""
        _sh(["ip", "-n", self.bridge.netns, "link", "set", f"p-{node}", "up"])

    def kill_all(self, node: str) -> list[int]:
        """SIGKILL every process inside ``node`` and wait for them; returns their pids."""
        pids = self.pids(node)
        _kill_and_wait(pids)
        for p in self._procs:
            with contextlib.suppress(Exception):
                if p.pid in pids:
                    p.wait(timeout=1)
        return pids

    def crash(self, node: str) -> None:
        """Power cut: link down, every process killed, its mounts and extra addresses gone.

        The node comes back as after a reboot with ``revive``.
        """
        # NB: the node's processes are found first and sent SIGKILL before its link goes down. With the
        # scan of /proc between the two (tens of ms), an agent on the local store (a file, not behind the
        # link) could renew its lease after the "power cut", which a real one does not allow.
        _sigkill(self.pids(node))
        self.link_down(node)
        self.kill_all(node)  # waits for them, and kills anything started since the scan
        self._unmount_all(node)
        n = self._ns[node]
        for a in self.addresses(node):
            if a != n.address:
                _sh(["ip", "-n", n.netns, "addr", "del", str(a), "dev", n.ifname], check=False)

    def revive(self, node: str) -> None:
        """Bring a crashed node back (link up); start its agent again yourself."""
        self.link_up(node)

    def hide_disk(self, node: str, disk: LoopDisk | None = None) -> None:
        """Make the shared disk unusable on ``node`` only (its device path becomes an empty file)."""
        d = disk or self.disk
        blank = self.tmp / "not-a-disk"
        blank.touch()
        self._in_mountns(node, ["mount", "--bind", str(blank), d.device])
        self._hidden.add((node, d.device))

    def show_disk(self, node: str, disk: LoopDisk | None = None) -> None:
        """Undo ``hide_disk``."""
        d = disk or self.disk
        self._in_mountns(node, ["umount", d.device])
        self._hidden.discard((node, d.device))

    # -- observing

    def addresses(self, node: str) -> list[IPv4Interface]:
        """IPv4 addresses on ``node``'s interface."""
        n = self._ns[node]
        res = _sh(["ip", "-n", n.netns, "-4", "-j", "addr", "show", "dev", n.ifname])
        out = []
        for link in json.loads(res.stdout or "[]"):
            for a in link.get("addr_info", []):
                out.append(IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
        return out

    def local_ips(self, node: str) -> set[IPv4Address]:
        """IPv4 addresses local to ``node`` (from its ``/proc/<pid>/net/fib_trie``; no process started)."""
        text = Path(f"/proc/{self._ns[node].anchor_pid}/net/fib_trie").read_text()
        found: set[IPv4Address] = set()
        last = ""
        for line in text.splitlines():
            s = line.strip()
            if s.startswith("|-- "):
                last = s[4:]
            elif s == "/32 host LOCAL" and last:
                found.add(IPv4Address(last))
        return found

    def vip_holders(self, vip: IPv4Interface | str | None = None) -> list[str]:
        """Nodes that have ``vip`` (default ``self.vip``) configured right now.

        Cheap (reads /proc, ~0.1 ms a node): fit for sampling every few milliseconds.
        """
        v = IPv4Interface(vip).ip if vip is not None else self.vip.ip
        return [n for n in self._node_names if v in self.local_ips(n)]

    def mounts(self, node: str) -> list[_os.MountEntry]:
        """Mounts of the harness's disks inside ``node``'s mount namespace."""
        n = self._ns[node]
        devs = {d for disk in self.disks if (d := _os.device_number(disk.device))}
        return [
            e
            for e in _os.read_mountinfo(f"/proc/{n.anchor_pid}/mountinfo")
            if (e.major, e.minor) in devs and e.fstype != "devtmpfs"
        ]

    def disk_holders(self, disk: LoopDisk | None = None) -> list[str]:
        """Nodes that have ``disk`` (default the first) mounted right now."""
        d = _os.device_number((disk or self.disk).device)
        return [n for n in self._node_names if any((e.major, e.minor) == d for e in self.mounts(n))]

    # -- internals

    def _in_mountns(self, node: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        n = self._ns[node]
        return _sh(["nsenter", "-t", str(n.anchor_pid), "--mount", "--", *argv])

    def _unmount_all(self, node: str) -> None:
        """Unmount, deepest first, what was mounted inside ``node``: the disks, the hidden devices."""
        n = self._ns[node]
        try:
            entries = _os.read_mountinfo(f"/proc/{n.anchor_pid}/mountinfo")
        except OSError:
            return
        devs = {d for disk in self.disks if (d := _os.device_number(disk.device))}
        tmp = str(self.tmp) + "/"
        targets = [
            e.mount_point
            for e in entries
            if ((e.major, e.minor) in devs and e.fstype != "devtmpfs")
            or e.mount_point.startswith(tmp)
            or e.mount_point in {d.device for d in self.disks}
        ]
        for mp in sorted(set(targets), key=lambda p: p.count("/"), reverse=True):
            r = _sh(["nsenter", "-t", str(n.anchor_pid), "--mount", "--", "umount", mp], check=False)
            if r.returncode != 0:
                _sh(["nsenter", "-t", str(n.anchor_pid), "--mount", "--", "umount", "-l", mp], check=False)
        self._hidden = {h for h in self._hidden if h[0] != node}


class _CalledProcessError(subprocess.CalledProcessError):
    def __init__(self, rc: int, argv: list[str], out: str, err: str, node: str) -> None:
        super().__init__(rc, argv, out, err)
        self.node = node

    def __str__(self) -> str:
        tail = (self.stderr or "").strip()[-2000:]
        return f"in {self.node}: {' '.join(map(str, self.cmd))} exited {self.returncode}" + (
            f"\n{tail}" if tail else ""
        )


def cleanup_stale() -> list[str]:
    """Remove what harnesses whose owner process died left behind; returns their prefixes."""
    if not RECORDS.is_dir():
        return []
    cleaned = []
    for rec_file in RECORDS.glob("kg*.json"):
        try:
            rec = json.loads(rec_file.read_text())
        except (OSError, ValueError):
            continue
        try:
            owner = psutil.Process(int(rec["owner_pid"]))
            if abs(owner.create_time() - float(rec["owner_started"])) < 0.5:
                continue  # still alive: not ours to touch
        except psutil.Error:
            pass
        netns = [str(n) for n in rec.get("netns", [])]
        net = {i for n in netns if (i := _ns_ino(f"/run/netns/{n}")) is not None}
        # Anchors and everything else in those network namespaces; their mount namespaces die with them.
        _kill_and_wait(_pids_in(net, set()))
        for loop in rec.get("loops", []):
            _detach_loop(str(loop["device"]), Path(loop["image"]))
        for n in netns:
            _sh(["ip", "netns", "del", n], check=False)
        tmp = str(rec.get("tmp", ""))
        if tmp.endswith(".harness") and Path(tmp).name.startswith("kg"):
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            rec_file.unlink()
        cleaned.append(str(rec.get("prefix", rec_file.stem)))
    return cleaned


def _main(argv: list[str]) -> int:
    if argv[1:] != ["--cleanup"]:
        print("usage: python -m kagemusha.testing.netns --cleanup", file=sys.stderr)
        return 2
    for prefix in cleanup_stale():
        print(f"removed leftovers of harness {prefix}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
