"""A transparent TCP proxy that delays what it forwards: the fault campaign's ``slow-store`` (root, testing only).

Inside one network namespace, an nftables rule (``nat`` ``output`` hook, :func:`nft_rules`) sends the
namespace's own outgoing connections to chosen ``address:port`` pairs (the etcd members' client ports)
to this proxy on ``127.0.0.1``. The proxy asks the kernel where each connection was going
(``SO_ORIGINAL_DST``), connects there itself, and forwards both ways, holding every chunk it reads
for the delay in force when the chunk arrived (seconds, read from the control file; ``0`` or no file
= pass-through). Chunks leave in order, so a delay adds latency without serialising requests: each
direction gets ``delay`` more, one request/answer ``2 * delay`` more, as ``netem delay`` on both
ends of a link would. The proxy's own connections carry a firewall mark (``SO_MARK``) that the rule
skips, so they are not redirected back to it.

Why hand-written: ``netem`` (``sch_netem``) is the tool for this, but kernels built without it exist
(the campaign's machine is one), and ``tc`` has no other qdisc that delays; toxiproxy is not packaged
for Debian (nor anything like it: only plain relays such as ``simpleproxy``, which neither delay nor
keep the original destination). The redirect must be in place before the client opens its
connections: etcd clients keep long-lived ones that a rule added later would not catch.

NB: etcd's JSON gateway dials its own member's client port over TCP; if a member runs in the
namespace, that connection is redirected too, and delaying it would slow every client of that
member, not only this namespace's. Connections made by a process named in ``exempt`` (``--exempt
etcd``) are therefore forwarded without delay; the owner is found through ``/proc/net/tcp`` and
the process's open files, once per connection, when its first chunk is to be delayed
(``test_exempt_process_is_not_delayed`` pins it).

Usage (as root, in the namespace; see ``bench/faults.py``)::

    nft -f - <<< "$(python -c 'from kagemusha.testing._delayproxy import nft_rules; ...')"
    python -m kagemusha.testing._delayproxy --listen 127.0.0.1:23790 --control /run/x/delay \\
        --stats /run/x/stats.json --exempt etcd
    echo 0.5 > /run/x/delay.tmp && mv /run/x/delay.tmp /run/x/delay      # every chunk +0.5 s each way

It prints ``listening HOST:PORT`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MARK", "DelayProxy", "ProxyStatistics", "main", "nft_rules", "original_dst", "spawn"]

#: The firewall mark of the proxy's own upstream connections ("kg"); :func:`nft_rules` skips it.
MARK = 0x6B67
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, at level SOL_IP
_CHUNK = 65536
_QUEUE_CHUNKS = 64  # per direction: at most 4 MiB held, then the reader waits (flow control)


def nft_rules(targets: Iterable[tuple[str, int]], port: int, *, table: str = "kgdelay", mark: int = MARK) -> str:
    """An ``nft -f`` script: TCP connections from this namespace to ``targets`` go to ``127.0.0.1:port``.

    Replaces the table if it exists (the script can be applied again). Connections carrying ``mark``
    (the proxy's own) are left alone.

    Raises:
        ValueError: no targets, a bad address or port.
    """
    pairs = []
    for host, p in targets:
        socket.inet_aton(host)  # IPv4 only, as the harness
        if not 0 < int(p) < 65536:
            raise ValueError(f"bad port {p} for {host}")
        pairs.append(f"{host} . {int(p)}")
    if not pairs:
        raise ValueError("no targets to redirect")
    if not 0 < port < 65536:
        raise ValueError(f"bad proxy port {port}")
    return (f"table ip {table} {{}}\nflush table ip {table}\n"
            f"table ip {table} {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n"
            f"  meta mark != {mark:#x} ip daddr . tcp dport {{ {', '.join(pairs)} }} redirect to :{port}\n"
            f" }}\n}}\n")


def spawn(popen: Callable[..., subprocess.Popen[Any]], *, listen: str = "127.0.0.1:0", control: Path | None = None,
          stats: Path | None = None, exempt: Iterable[str] = (), stderr: Any = None,
          timeout: float = 30.0) -> tuple[subprocess.Popen[Any], int]:
    """Start the proxy with ``popen(argv, **kwargs)`` (e.g. ``functools.partial(harness.popen, "n1")``).

    Returns the process and the port it listens on, once it accepts connections.

    Raises:
        RuntimeError: it exited or did not say it listens within ``timeout`` s (it is killed then).
    """
    argv = [sys.executable, "-m", "kagemusha.testing._delayproxy", "--listen", listen]
    argv += ["--control", str(control)] if control is not None else []
    argv += ["--stats", str(stats)] if stats is not None else []
    for comm in exempt:
        argv += ["--exempt", comm]
    proc = popen(argv, stdout=subprocess.PIPE, stderr=stderr)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        chunk = os.read(fd, 256) if left > 0 and select.select([fd], [], [], left)[0] else None
        if not chunk:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"delay proxy did not start within {timeout:g} s (exit {proc.returncode}): {buf!r}")
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("listening "):
        raise RuntimeError(f"delay proxy said {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going: ``(address, port)`` from ``SO_ORIGINAL_DST``.

    Raises:
        OSError: the connection was not redirected by netfilter NAT (ENOENT).
    """
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)  # struct sockaddr_in
    (port,) = struct.unpack_from("!H", raw, 2)
    return socket.inet_ntoa(raw[4:8]), port


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyStatistics:
    """What the proxy did so far (``DelayProxy.statistics()``; the ``--stats`` file holds the same)."""

    delay: float  # in force now, s
    connections: int  # accepted and forwarded
    exempt: int  # of which made by an exempt process (never delayed; looked up only once a delay is set)
    refused: int  # accepted but the original destination could not be reached (the client was reset)
    chunks: int  # forwarded, both directions
    delayed_chunks: int  # forwarded after a delay > 0
    bytes: int
    max_delay: float  # the largest delay applied to a chunk, s


class _Control:
    """The delay in the control file, re-read when the file changes (one ``stat`` per call)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.delay = 0.0
        self._seen: tuple[int, int, int] | None = None

    def current(self) -> float:
        if self.path is None:
            return self.delay
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self.delay = None, 0.0
            return self.delay
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen:
            self._seen = key
            text = self.path.read_text().strip()
            try:
                value = float(text or "0")
                if not (value >= 0 and value < 3600):
                    raise ValueError(text)
            except ValueError:
                print(f"delayproxy: {self.path}: expected seconds >= 0, got {text!r}; delay stays {self.delay:g}",
                      file=sys.stderr, flush=True)
            else:
                self.delay = value
        return self.delay


def _hexaddr(text: str) -> tuple[str, int]:
    """``0B0012C6:0947`` of /proc/net/tcp (address in host byte order) -> ("198.18.0.11", 2375)."""
    a, p = text.split(":")
    return socket.inet_ntoa(struct.pack("=I", int(a, 16))), int(p, 16)


def _socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The inode of this namespace's TCP socket ``local`` -> ``remote`` (None when it is gone)."""
    with open("/proc/self/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if _hexaddr(fields[1]) == local and _hexaddr(fields[2]) == remote:
                return int(fields[9])
    return None


def _owned_by(inode: int, comms: frozenset[str]) -> bool:
    """Whether a process whose command name is in ``comms`` holds socket ``inode``."""
    target = f"socket:[{inode}]"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() not in comms:
                    continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return True
        except OSError:  # the process went away meanwhile
            continue
    return False


def _is_exempt(peer: tuple[str, int], dst: tuple[str, int], comms: frozenset[str]) -> bool:
    try:
        inode = _socket_inode(peer, dst)
        return inode is not None and inode != 0 and _owned_by(inode, comms)
    except (OSError, ValueError, IndexError):  # /proc unreadable or odd: delay it like any other
        return False


class _Exemption:
    """Whether one connection is exempt, found out once, when a chunk of it is first to be delayed.

    NB: not at accept: the look-up reads /proc (every process's name), which on a loaded machine
    takes long enough to make a pass-through connection slow; only a delayed chunk can wait for it.
    """

    def __init__(self, proxy: DelayProxy, peer: tuple[str, int], dst: tuple[str, int]) -> None:
        self.proxy, self.peer, self.dst = proxy, peer, dst
        self._value: bool | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> bool:
        if not self.proxy.exempt:
            return False
        async with self._lock:  # both directions may ask at once: one look-up
            if self._value is None:
                self._value = await asyncio.to_thread(_is_exempt, self.peer, self.dst, self.proxy.exempt)
                self.proxy._n["exempt"] += self._value
            return self._value


class DelayProxy:
    """The proxy. ``await serve()`` runs it until cancelled; ``statistics()`` reports.

    Args:
        listen: ``(host, port)`` to accept redirected connections on (port 0: any free one; see ``address``).
        control: file holding the delay in seconds (``None``: no file, always pass-through).
        exempt: command names (``/proc/<pid>/comm``) whose connections are never delayed.
        mark: ``SO_MARK`` of the upstream connections (the nftables rule skips it); 0 = none.
    """

    def __init__(self, listen: tuple[str, int], *, control: Path | None = None, exempt: Iterable[str] = (),
                 mark: int = MARK) -> None:
        self.listen = listen
        self.control = _Control(control)
        self.exempt = frozenset(exempt)
        self.mark = mark
        self.address: tuple[str, int] | None = None
        # NB: the loop keeps only weak references to tasks; a connection whose two transports are both
        # out of the selector for a moment (EOF read on each, writes pending) would be garbage collected
        # mid-flight ("Task was destroyed but it is pending"). Its handler task is kept here.
        self._handlers: set[asyncio.Task[None] | None] = set()
        self._n = {"connections": 0, "exempt": 0, "refused": 0, "chunks": 0, "delayed_chunks": 0, "bytes": 0}
        self._max_delay = 0.0

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(delay=self.control.delay, max_delay=self._max_delay, **self._n)

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1], reuse_address=True)
        sockname = server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    async def _connect(self, dst: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self.mark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, dst)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        csock: socket.socket = cwriter.get_extra_info("socket")
        upstream: asyncio.StreamWriter | None = None
        me = asyncio.current_task()
        self._handlers.add(me)
        try:
            try:
                dst = original_dst(csock)
            except OSError:  # not redirected: someone connected to the proxy itself
                return
            if dst == self.address:
                return  # a loop (a rule that does not skip the mark): refuse
            peer = cwriter.get_extra_info("peername")
            exempt = _Exemption(self, (str(peer[0]), int(peer[1])), dst)
            try:
                ureader, upstream = await self._connect(dst)
            except OSError:
                # NB: the client's handshake with us already succeeded; a reset is the closest to the
                # refusal or timeout it would have met (it cannot tell whether its request was sent).
                self._n["refused"] += 1
                with contextlib.suppress(OSError):
                    csock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            self._n["connections"] += 1
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._pipe(creader, upstream, exempt))
                    tg.create_task(self._pipe(ureader, cwriter, exempt))
            except* (OSError, asyncio.IncompleteReadError):
                pass  # a reset on either side: both are closed below
        finally:
            for w in (cwriter, upstream):
                if w is not None:
                    w.close()
            self._handlers.discard(me)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exempt: _Exemption) -> None:
        """Forward one direction; each chunk leaves ``delay`` after it arrived, in order; EOF likewise."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)

        async def read_side() -> None:
            while True:
                data = await reader.read(_CHUNK)  # a reset raises: both sides are closed at once
                arrival = loop.time()
                delay = self.control.current()
                if delay > 0 and await exempt.get():
                    delay = 0.0
                await queue.put((arrival + delay, data))
                if data:
                    self._n["chunks"] += 1
                    self._n["bytes"] += len(data)
                    if delay > 0:
                        self._n["delayed_chunks"] += 1
                        self._max_delay = max(self._max_delay, delay)
                if not data:
                    return

        async def write_side() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(read_side())
            tg.create_task(write_side())


async def _stats_writer(proxy: DelayProxy, path: Path) -> None:
    last = None
    while True:
        s = proxy.statistics()
        if s != last:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps({**dataclasses.asdict(s), "time": time.time()}) + "\n")
            tmp.replace(path)
            last = s
        await asyncio.sleep(0.1)


async def _run(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    proxy = DelayProxy((host, int(port)), control=args.control, exempt=args.exempt, mark=args.mark)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(proxy.serve(ready))
        await ready.wait()
        assert proxy.address is not None
        print(f"listening {proxy.address[0]}:{proxy.address[1]}", flush=True)
        if args.stats is not None:
            tg.create_task(_stats_writer(proxy, args.stats))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kagemusha.testing._delayproxy",
                                 description="transparent TCP proxy that delays each chunk (slow-store fault)")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept redirected connections on")
    ap.add_argument("--control", type=Path, help="file with the delay in seconds (absent: 0, pass-through)")
    ap.add_argument("--stats", type=Path, help="file the statistics are written to (JSON, every 0.1 s on change)")
    ap.add_argument("--exempt", action="append", default=[], metavar="COMM",
                    help="never delay connections made by processes of this command name (repeatable)")
    ap.add_argument("--mark", type=lambda s: int(s, 0), default=MARK, help=f"SO_MARK of upstream connections "
                                                                           f"(default {MARK:#x})")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
