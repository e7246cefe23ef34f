"""Wake-ups when one file is written: Linux inotify through ctypes, for the local store's watch.

Why: the local store's watchers used to ask SQLite every 20 ms whether anything changed (50 queries a
second per agent, most of an idle agent's CPU). Now a writer that changed keys writes a byte to a signal
file, and each ``write(2)`` makes inotify report ``IN_MODIFY`` to every process watching that file. A
watcher that waits on these events never misses one: the kernel queues them from the moment the watch is
added, so a write between a poll and the next wait still wakes that wait. The file itself is watched,
not its directory: the database's own files in that directory change at every lease renewal and would
wake the watcher for nothing.

Usage::

    sig = FileChanges.open("/var/lib/kagemusha/store.db-events")   # created if missing
    if sig is None:  # not Linux, or inotify refused (EMFILE: max_user_instances): poll instead
        ...
    changed = await sig.wait(timeout)   # True: the file was written (or events were lost); False: timeout
    sig.close()

NB: only ``write(2)`` and friends are reported, not writes through a shared mapping. A lost event (the
kernel's queue overflowed) counts as a change, and so does the file being deleted or renamed (the watch
is then added again, to a new file of that name, at the next wait).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct

__all__ = ["FileChanges"]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
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


def _add_watch(lib: ctypes.CDLL, fd: int, path: str) -> bool:
    """Create ``path`` if missing (empty, 0600) and watch it on the inotify instance ``fd``."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError:
        return False
    return bool(lib.inotify_add_watch(fd, os.fsencode(path), _MASK) >= 0)


class FileChanges:
    """An inotify instance watching one file for writes, on the running loop."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self._path = path
        self._changed = False
        self._gone = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def open(cls, path: str) -> FileChanges | None:
        """Watch the file ``path`` (created if missing); ``None`` when inotify cannot be used here."""
        lib = _lib()
        if lib is None:
            return None
        fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return None  # EMFILE (fs.inotify.max_user_instances), ENOSYS, ...
        if not _add_watch(lib, fd, path):
            os.close(fd)
            return None
        return cls(fd, path)

    def _drain(self) -> None:
        """Read every queued event: any is a change (a write, lost events, the file gone)."""
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
                pos += _HEADER.size + size
                self._changed = True
                if mask & _GONE:
                    self._gone = True

    def _readable(self) -> None:
        self._drain()
        if self._changed and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a write to a watched file since the last call; True if there was one."""
        self._drain()
        if self._gone:
            lib = _lib()
            if lib is not None and _add_watch(lib, self._fd, self._path):
                self._gone = False
            else:
                await asyncio.sleep(timeout)  # cannot watch it now: the caller polls at its pace
                return True
        if not self._changed:
            loop = asyncio.get_running_loop()
            if self._loop is None:
                loop.add_reader(self._fd, self._readable)
                self._loop = loop
            waiter = self._waiter = loop.create_future()
            # NB: a timer, not asyncio.wait_for: on Python 3.11 wait_for swallows a cancellation that comes
            # as the waiter completes (the agent's own revoke at leave writes the file just then), and the
            # agent's task group then waited forever for its watcher (uninstall found the agent hung).
            def expire() -> None:
                if not waiter.done():
                    waiter.set_result(None)

            timer = loop.call_later(timeout, expire)
            try:
                await waiter
            finally:
                timer.cancel()
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
