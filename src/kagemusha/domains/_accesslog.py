"""The domain's access log: the same lines in ``logs/access.log``, written in batches.

uvicorn logs every request through the ``uvicorn.access`` logger. With the standard library's
``RotatingFileHandler`` that record cost the app server about as much CPU as serving the request
itself: each record was formatted twice (``asctime`` through ``strftime`` both times) and took
five system calls (two ``stat``, ``lseek``, ``tell``, ``write``). Here a record is formatted once
(the time stamp is made once a second), kept in memory and written with the others in one
``write``:

- at most :data:`FLUSH_INTERVAL` seconds after the first record of a batch (a timer on the
  running event loop, armed only while something is buffered: an idle server does nothing);
- at once when :data:`MAX_BUFFER` bytes are buffered, and when the process stops (``flush()``
  from ``logging.shutdown()``, which :func:`kagemusha.domains._appserver.exit_now` calls, and
  from each pre-forked worker's exit);
- at once when there is no running event loop (a record from another thread is not buffered).

A process killed with SIGKILL loses at most the last second of its access log; nothing else
changes. The file is rotated as before (``maxBytes`` / ``backupCount``, checked once per batch
against the file's real size); the file is opened ``O_APPEND`` and each batch is one ``write``
of whole lines, so the workers of a pre-forked domain never interleave half lines, and a worker
whose file another worker has rotated reopens the new one.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

__all__ = ["FLUSH_INTERVAL", "MAX_BUFFER", "AccessLogFormatter", "BufferedRotatingFileHandler"]

FLUSH_INTERVAL = 1.0  # seconds a record may wait in memory
MAX_BUFFER = 64 * 1024  # bytes buffered before a write regardless of the timer


class AccessLogFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s``, the stamp made once a second.

    The text is exactly what :class:`logging.Formatter` makes of that format (default
    ``datefmt``, local time, milliseconds after a comma); records with an exception or stack
    fall back to it.
    """

    FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

    def __init__(self) -> None:
        super().__init__(self.FORMAT)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        created = record.created
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        ms = int(record.msecs)
        return f"{self._stamp},{ms:03d} {record.levelname} [{record.process}] {record.name}: {record.getMessage()}"


class BufferedRotatingFileHandler(logging.Handler):
    """A rotating file handler that writes its records in batches (see the module's docstring).

    Args:
        filename: the log file; ``filename.1`` ... ``filename.<backupCount>`` are its rotations.
        maxBytes: rotate before a batch would take the file past this size.
        backupCount: rotated files kept (as the standard handler: when either is 0, no rotation).
        flushInterval: seconds the first record of a batch may wait.
        maxBuffer: bytes buffered before a write regardless of the timer.
    """

    def __init__(
        self,
        filename: str,
        maxBytes: int = 0,  # NB: the standard handler's argument names (dictConfig passes them)
        backupCount: int = 0,
        flushInterval: float = FLUSH_INTERVAL,
        maxBuffer: int = MAX_BUFFER,
    ) -> None:
        super().__init__()
        self.filename = os.path.abspath(os.fspath(filename))
        self.max_bytes = maxBytes
        self.backup_count = backupCount
        self.flush_interval = flushInterval
        self.max_buffer = maxBuffer
        self._lines: list[str] = []
        self._buffered = 0
        self._timer: Any = None  # asyncio.TimerHandle while a batch waits
        # NB: opened at configuration, as the standard handler does: a bad path shows at once
        self._fd: int | None = self._open()

    def _open(self) -> int:
        return os.open(self.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self._lines.append(line)
            self._buffered += len(line) + 1
            if self._buffered >= self.max_buffer:
                self.flush()
            elif self._timer is None:
                self._arm()
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(record)

    def _arm(self) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing would flush later
            self.flush()
            return
        self._timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        """Write every buffered line now (one ``write``), rotating first if the file is full."""
        self.acquire()
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._lines:
                return
            data = ("\n".join(self._lines) + "\n").encode("utf-8", "backslashreplace")
            self._lines.clear()
            self._buffered = 0
            self._write(data)
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(logging.makeLogRecord({"msg": f"cannot write {self.filename}"}))
        finally:
            self.release()

    def _write(self, data: bytes) -> None:
        fd = self._current_fd()
        if self.max_bytes > 0 and self.backup_count > 0:  # NB: as the standard handler: either 0, no rotation
            size = os.fstat(fd).st_size
            if size > 0 and size + len(data) > self.max_bytes:
                self._rotate()
                fd = self._current_fd()
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _current_fd(self) -> int:
        """The open file, reopened when the path names another file (rotated by another process)."""
        fd = self._fd
        if fd is not None:
            try:
                same = os.path.samestat(os.stat(self.filename), os.fstat(fd))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)
        self._fd = fd = self._open()
        return fd

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for i in range(self.backup_count - 1, 0, -1):
            src = f"{self.filename}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.filename}.{i + 1}")
        if os.path.exists(self.filename):
            os.replace(self.filename, f"{self.filename}.1")
        self._fd = self._open()

    def close(self) -> None:
        self.acquire()
        try:
            self.flush()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        finally:
            self.release()
            super().close()
