"""The ``local`` store: SQLite in WAL mode, for agents that share one host.

Every operation is one SQLite transaction run whole in the store's own thread,
so compare-and-set is atomic across processes (``BEGIN IMMEDIATE`` takes the
database's write lock). NB: aiosqlite would split a transaction across awaits;
a single-thread executor running one synchronous function per operation keeps
each operation one transaction, which is the property the contract needs.

Leases expire by ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every
process on a Linux host (network namespaces share it) and does not jump with
the wall clock. That is why this store cannot span hosts
(``capabilities.spans_hosts = False``). NB: CLOCK_MONOTONIC starts again near
zero at boot, so every lease also records the kernel's boot id
(``/proc/sys/kernel/random/boot_id``) and a lease of another boot is expired:
otherwise a lease would outlive a reboot by the previous uptime
(``tests/store/test_local_boot.py``). Expired leases are reaped, with delete
events, at the start of every operation and every watch poll.

Watches: every write that adds events (a key changed) then writes one byte to
the signal file ``<db>-events`` next to the database; a watch polls the event
table when that file is written (inotify on the directory,
``_inotify.FileChanges``), at the earliest lease expiry (so a dead node's keys
are deleted, and their delete events delivered, at the instant its lease
expires, not a poll later), and at least every ``WATCH_IDLE_POLL``. Lease
renewals change no key and wake no watch (they are most of an idle cluster's
commits). Without inotify a watch polls every ``WATCH_POLL``. NB: a writer
killed between its commit and the signal delays that change for watchers by up
to ``WATCH_IDLE_POLL``; nothing is lost (the next poll reads it).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kagemusha.errors import LeaseExpired, StoreUnavailable
from kagemusha.store._base import KeyValue, Lease, Store, StoreCapabilities, WatchEvent, WatchEventType
from kagemusha.store._inotify import FileChanges

__all__ = ["LocalStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value TEXT NOT NULL,
    create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, lease INTEGER);
CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expires REAL NOT NULL,
    boot TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS events (rev INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0);
INSERT OR IGNORE INTO meta VALUES ('compacted', 0);
"""

#: Events kept for watches that resume; older ones are compacted away.
EVENTS_KEPT = 20000
#: How often a watch polls when it has no inotify wake-up (not Linux, or inotify instances used up).
WATCH_POLL = 0.02
#: How often a watch with inotify polls all the same (a safety net; every commit wakes it anyway).
WATCH_IDLE_POLL = 1.0
#: A watch wakes this long after a lease's expiry (the expiry must have passed when the reap compares).
EXPIRY_WAKE_LATE = 0.0002


def current_boot_id() -> str:
    """This boot of the kernel (a new random id at every boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:  # not Linux: no reboot detection; leases still expire by the clock
        return ""


def _prefix_end(prefix: str) -> str:
    return prefix + "\U0010ffff"


class LocalStore(Store):
    """SQLite-backed store for nodes on one host (demo, development, tests)."""

    capabilities = StoreCapabilities(spans_hosts=False, linearizable=True)

    def __init__(
        self, path: str, *, timeout: float = 1.0, clock: Callable[[], float] = time.monotonic, boot_id: str | None = None
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._clock = clock
        self.boot_id = current_boot_id() if boot_id is None else boot_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kagemusha-store")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        #: the current write transaction added events (``_signal`` after its commit)
        self._bumped = False

    @classmethod
    def from_url(cls, url: Any, *, timeout: float = 1.0, **_: Any) -> LocalStore:
        return cls(url.path, timeout=timeout)

    # -- plumbing ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            d = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(d):
                raise StoreUnavailable(f"local store {self.path}: directory {d} does not exist")
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                conn.executescript(_SCHEMA)
                cols = {r[1] for r in conn.execute("PRAGMA table_info(leases)")}
                if "boot" not in cols:  # a store file from before leases recorded the boot
                    conn.execute("ALTER TABLE leases ADD COLUMN boot TEXT NOT NULL DEFAULT ''")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"local store {self.path}: closed")

        def call() -> T:
            try:
                return fn(self._connect())
            except sqlite3.Error as exc:
                if self._conn is not None and self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise StoreUnavailable(f"local store {self.path}: {exc}") from exc

        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, call)
        try:
            # busy_timeout bounds the lock wait; this bounds everything else (slow disk). NB: asyncio.timeout,
            # not wait_for, which on Python 3.11 can swallow a cancellation that comes as the call completes.
            async with asyncio.timeout(self.timeout * 2 + 0.5):
                return await asyncio.shield(fut)
        except TimeoutError as exc:
            raise StoreUnavailable(f"local store {self.path}: request timed out") from exc

    def _write(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        self._bumped = False
        try:
            self._reap(conn)
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if self._bumped:
            self._signal()
        return result

    @property
    def signal_path(self) -> str:
        """The file a write that changed keys writes to, to wake every watch (see the module's docstring)."""
        return self.path + "-events"

    def _signal(self) -> None:
        """Wake the watches of every process: one byte written to the signal file (an inotify ``IN_MODIFY``).

        NB: opened for each signal, not kept open: a file deleted and made again is still the one watched.
        """
        try:
            fd = os.open(self.signal_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.pwrite(fd, b"\0", 0)
            finally:
                os.close(fd)
        except OSError:
            pass  # watches then see the change at their next poll (WATCH_IDLE_POLL at the latest)

    def _bump(self, conn: sqlite3.Connection) -> int:
        self._bumped = True
        conn.execute("UPDATE meta SET v = v + 1 WHERE k='revision'")
        rev: int = conn.execute("SELECT v FROM meta WHERE k='revision'").fetchone()[0]
        if rev % 1000 == 0:
            cut = rev - EVENTS_KEPT
            if cut > 0:
                conn.execute("DELETE FROM events WHERE rev < ?", (cut,))
                conn.execute("UPDATE meta SET v = ? WHERE k='compacted'", (cut,))
        return rev

    def _revision(self, conn: sqlite3.Connection) -> int:
        rev: int = conn.execute("SELECT v FROM meta WHERE k='revision'").fetchone()[0]
        return rev

    def _delete_key(self, conn: sqlite3.Connection, key: str) -> None:
        rev = self._bump(conn)
        conn.execute("DELETE FROM kv WHERE key=?", (key,))
        conn.execute("INSERT INTO events VALUES (?, 'delete', ?, '')", (rev, key))

    def _reap(self, conn: sqlite3.Connection) -> None:
        now = self._clock()
        expired = [r[0] for r in conn.execute("SELECT id FROM leases WHERE expires <= ? OR boot != ?", (now, self.boot_id))]
        for lid in expired:
            self._drop_lease(conn, lid)

    def _drop_lease(self, conn: sqlite3.Connection, lid: int) -> None:
        for (key,) in conn.execute("SELECT key FROM kv WHERE lease=? ORDER BY key", (lid,)).fetchall():
            self._delete_key(conn, key)
        conn.execute("DELETE FROM leases WHERE id=?", (lid,))

    def _maybe_reap(self, conn: sqlite3.Connection) -> None:
        if conn.execute(
            "SELECT 1 FROM leases WHERE expires <= ? OR boot != ? LIMIT 1", (self._clock(), self.boot_id)
        ).fetchone():
            self._write(conn, lambda c: None)

    def _check_lease(self, conn: sqlite3.Connection, lease: int | None) -> None:
        if lease is not None and not conn.execute("SELECT 1 FROM leases WHERE id=?", (lease,)).fetchone():
            raise LeaseExpired(f"lease {lease} does not exist")

    def _set(self, conn: sqlite3.Connection, key: str, value: str, lease: int | None) -> int:
        rev = self._bump(conn)
        conn.execute(
            "INSERT INTO kv VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "value=excluded.value, mod_rev=excluded.mod_rev, lease=excluded.lease",
            (key, value, rev, rev, lease),
        )
        conn.execute("INSERT INTO events VALUES (?, 'put', ?, ?)", (rev, key, value))
        return rev

    @staticmethod
    def _kv(row: tuple[Any, ...]) -> KeyValue:
        return KeyValue(key=row[0], value=row[1], create_revision=row[2], mod_revision=row[3], lease=row[4])

    # -- contract ---------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        def op(conn: sqlite3.Connection) -> KeyValue | None:
            self._maybe_reap(conn)
            row = conn.execute("SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE key=?", (key,)).fetchone()
            return self._kv(row) if row else None

        return await self._run(op)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        def op(conn: sqlite3.Connection) -> tuple[list[KeyValue], int]:
            self._maybe_reap(conn)
            conn.execute("BEGIN")
            try:
                rows = conn.execute(
                    "SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                    (prefix, _prefix_end(prefix)),
                ).fetchall()
                rev = self._revision(conn)
            finally:
                conn.execute("COMMIT")
            return [self._kv(r) for r in rows], rev

        return await self._run(op)

    async def put(self, key: str, value: str, *, lease: int | None = None) -> int:
        def body(conn: sqlite3.Connection) -> int:
            self._check_lease(conn, lease)
            return self._set(conn, key, value, lease)

        return await self._run(lambda c: self._write(c, body))

    async def cas(self, key: str, value: str, *, expected_revision: int, lease: int | None = None) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            self._check_lease(conn, lease)
            row = conn.execute("SELECT mod_rev FROM kv WHERE key=?", (key,)).fetchone()
            current = row[0] if row else 0
            if current != expected_revision:
                return False
            self._set(conn, key, value, lease)
            return True

        return await self._run(lambda c: self._write(c, body))

    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT mod_rev FROM kv WHERE key=?", (key,)).fetchone()
            if row is None or (expected_revision is not None and row[0] != expected_revision):
                return False
            self._delete_key(conn, key)
            return True

        return await self._run(lambda c: self._write(c, body))

    async def grant_lease(self, ttl: float) -> Lease:
        if not ttl > 0:
            raise ValueError("lease ttl must be > 0")

        def body(conn: sqlite3.Connection) -> Lease:
            cur = conn.execute(
                "INSERT INTO leases (ttl, expires, boot) VALUES (?, ?, ?)", (ttl, self._clock() + ttl, self.boot_id)
            )
            assert cur.lastrowid is not None
            return Lease(id=cur.lastrowid, ttl=ttl)

        return await self._run(lambda c: self._write(c, body))

    async def keepalive(self, lease_id: int) -> float:
        def body(conn: sqlite3.Connection) -> float:
            row = conn.execute("SELECT ttl FROM leases WHERE id=?", (lease_id,)).fetchone()
            if row is None:
                raise LeaseExpired(f"lease {lease_id} has expired or was revoked")
            conn.execute("UPDATE leases SET expires=? WHERE id=?", (self._clock() + row[0], lease_id))
            ttl: float = row[0]
            return ttl

        return await self._run(lambda c: self._write(c, body))

    async def revoke(self, lease_id: int) -> None:
        await self._run(lambda c: self._write(c, lambda conn: self._drop_lease(conn, lease_id)))

    async def watch(self, prefix: str, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        def head(conn: sqlite3.Connection) -> tuple[int, int]:
            self._maybe_reap(conn)
            compacted: int = conn.execute("SELECT v FROM meta WHERE k='compacted'").fetchone()[0]
            return self._revision(conn), compacted

        current, compacted = await self._run(head)
        nxt = current + 1 if start_revision is None else start_revision
        if nxt < compacted:
            raise StoreUnavailable(f"local store {self.path}: revision {nxt} has been compacted (oldest {compacted})")

        def poll(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], float | None]:
            self._maybe_reap(conn)
            rows = conn.execute(
                "SELECT rev, type, key, value FROM events WHERE rev >= ? AND key >= ? AND key < ? ORDER BY rev",
                (nxt, prefix, _prefix_end(prefix)),
            ).fetchall()
            soonest: float | None = conn.execute("SELECT MIN(expires) FROM leases").fetchone()[0]
            return rows, soonest

        # NB: the change signal is opened before the first poll, so a commit after that poll wakes the wait.
        changes = FileChanges.open(self.signal_path)
        try:
            while True:
                rows, soonest = await self._run(poll)
                for rev, typ, key, value in rows:
                    nxt = rev + 1
                    yield WatchEvent(type=WatchEventType(typ), key=key, value=value, revision=rev)
                if rows:
                    continue
                wait = WATCH_POLL if changes is None else WATCH_IDLE_POLL
                if soonest is not None:
                    # A lease's expiry deletes its keys without anyone writing: wake at that instant and reap
                    # it (the expiry is in this store's clock, which runs with the loop's; NB: never a hot loop).
                    wait = min(wait, max(soonest - self._clock(), 0.0) + EXPIRY_WAKE_LATE)
                if changes is None:
                    await asyncio.sleep(wait)
                else:
                    await changes.wait(wait)
        finally:
            if changes is not None:
                changes.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
