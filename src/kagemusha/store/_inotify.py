"""Wake-ups when a file in one directory is written: Linux inotify through ctypes, for the local store's watch.

Why: the local store's watchers used to ask SQLite every 20 ms whether anything changed (50 queries a
second per agent, most of an idle agent's CPU). Every commit of an SQLite database in WAL mode writes its
``-wal`` file (a rollback-journal database writes the database file itself), and each ``write(2)`` makes
inotify report ``IN_MODIFY``, whichever process wrote. So a watcher that waits on these events polls only
after a commit (of anyone), and never misses one: the events are queued by the kernel from the moment the
watch is added, so a commit between a poll and the next wait still wakes that wait.

Usage::

    sig = FileChanges.open("/var/lib/kagemusha", {"store.db", "store.db-wal", "store.db-journal"})
    if sig is None:  # not Linux, or inotify refused (EMFILE: max_user_instances): poll instead
        ...
    changed = await sig.wait(timeout)   # True: a named file was written (or events were lost); False: timeout
    sig.close()

NB: only ``write(2)`` and friends are reported, not writes through a shared mapping: SQLite writes the WAL
and the database with ``pwrite`` (``-shm`` is mapped and is not watched). A lost event (the kernel's queue
overflowed) counts as a change.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct
from collections.abc import Iterable

__all__ = ["FileChanges"]

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.inotify_init1.argtypes = [ctypes.c_int]
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        except (OSError, AttributeError):  # no libc symbol: not Linux
            return None
        _libc = lib
    return _libc


class FileChanges:
    """An inotify instance watching one directory for writes to some of its files, on the running loop."""

    def __init__(self, fd: int, names: frozenset[bytes]) -> None:
        self._fd = fd
        self._names = names
        self._changed = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def open(cls, directory: str, names: Iterable[str]) -> FileChanges | None:
        """Watch ``directory`` for writes to the files ``names``; ``None`` when inotify cannot be used here."""
        lib = _lib()
        if lib is None:
            return None
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return None  # EMFILE (fs.inotify.max_user_instances), ENOSYS, ...
        if lib.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
            os.close(fd)
            return None
        return cls(fd, frozenset(os.fsencode(n) for n in names))

    def _drain(self) -> None:
        """Read every queued event; note whether one names a watched file (or events were lost)."""
        while True:
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._changed = True  # cannot tell: count it as a change (the caller polls once more)
                return
            if not buf:
                return
            pos = 0
            while pos + _HEADER.size <= len(buf):
                _wd, mask, _cookie, size = _HEADER.unpack_from(buf, pos)
                name = buf[pos + _HEADER.size: pos + _HEADER.size + size].rstrip(b"\0")
                pos += _HEADER.size + size
                if mask & IN_Q_OVERFLOW or name in self._names:
                    self._changed = True

    def _readable(self) -> None:
        self._drain()
        if self._changed and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a write to a watched file since the last call; True if there was one."""
        self._drain()
        if not self._changed:
            loop = asyncio.get_running_loop()
            if self._loop is None:
                loop.add_reader(self._fd, self._readable)
                self._loop = loop
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                pass
            finally:
                self._waiter = None
        changed, self._changed = self._changed, False
        return changed

    def close(self) -> None:
        """Stop watching (idempotent)."""
        if self._fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._fd)
            except (RuntimeError, ValueError, OSError):
                pass
        self._loop = None
        os.close(self._fd)
        self._fd = -1
