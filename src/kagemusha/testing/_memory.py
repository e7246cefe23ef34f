"""``MemoryStore``: an in-memory store for unit tests of logic above the store contract.

It passes ``check_store`` (see ``tests/store/test_memory.py``), so code tested against it behaves the
same on the real backends. Several ``MemoryStore`` objects share one ``MemoryBackend`` to act as
several clients of one store. ``clock`` is injectable, so lease expiry can be tested without sleeping;
``fail`` makes every call raise ``StoreUnavailable`` (a store outage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from kagemusha.errors import LeaseExpired, StoreUnavailable
from kagemusha.store._base import KeyValue, Lease, Store, StoreCapabilities, WatchEvent, WatchEventType

__all__ = ["MemoryBackend", "MemoryStore"]


@dataclass
class MemoryBackend:
    """The shared state of one in-memory store."""

    clock: Callable[[], float] = time.monotonic
    revision: int = 0
    kv: dict[str, KeyValue] = field(default_factory=dict)
    leases: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> (ttl, expires)
    events: list[WatchEvent] = field(default_factory=list)
    next_lease: int = 1
    fail: bool = False

    def bump(self) -> int:
        self.revision += 1
        return self.revision

    def set(self, key: str, value: str, lease: int | None) -> int:
        rev = self.bump()
        old = self.kv.get(key)
        self.kv[key] = KeyValue(key, value, rev, old.create_revision if old else rev, lease)
        self.events.append(WatchEvent(WatchEventType.PUT, key, value, rev))
        return rev

    def remove(self, key: str) -> None:
        rev = self.bump()
        del self.kv[key]
        self.events.append(WatchEvent(WatchEventType.DELETE, key, "", rev))

    def reap(self) -> None:
        now = self.clock()
        for lid, (_, expires) in list(self.leases.items()):
            if expires <= now:
                self.drop(lid)

    def drop(self, lid: int) -> None:
        for key in sorted(k for k, v in self.kv.items() if v.lease == lid):
            self.remove(key)
        self.leases.pop(lid, None)


class MemoryStore(Store):
    """One client of a ``MemoryBackend``."""

    capabilities = StoreCapabilities(spans_hosts=False, linearizable=True)

    def __init__(self, backend: MemoryBackend | None = None) -> None:
        self.backend = backend or MemoryBackend()

    def _b(self) -> MemoryBackend:
        b = self.backend
        if b.fail:
            raise StoreUnavailable("memory store: outage (fail=True)")
        b.reap()
        return b

    def _lease_ok(self, b: MemoryBackend, lease: int | None) -> None:
        if lease is not None and lease not in b.leases:
            raise LeaseExpired(f"lease {lease} does not exist")

    async def get(self, key: str) -> KeyValue | None:
        return self._b().kv.get(key)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        b = self._b()
        return [b.kv[k] for k in sorted(b.kv) if k.startswith(prefix)], b.revision

    async def put(self, key: str, value: str, *, lease: int | None = None) -> int:
        b = self._b()
        self._lease_ok(b, lease)
        return b.set(key, value, lease)

    async def cas(self, key: str, value: str, *, expected_revision: int, lease: int | None = None) -> bool:
        b = self._b()
        self._lease_ok(b, lease)
        cur = b.kv.get(key)
        if (cur.mod_revision if cur else 0) != expected_revision:
            return False
        b.set(key, value, lease)
        return True

    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        b = self._b()
        cur = b.kv.get(key)
        if cur is None or (expected_revision is not None and cur.mod_revision != expected_revision):
            return False
        b.remove(key)
        return True

    async def grant_lease(self, ttl: float) -> Lease:
        b = self._b()
        lid = b.next_lease
        b.next_lease += 1
        b.leases[lid] = (ttl, b.clock() + ttl)
        return Lease(lid, ttl)

    async def keepalive(self, lease_id: int) -> float:
        b = self._b()
        if lease_id not in b.leases:
            raise LeaseExpired(f"lease {lease_id} has expired or was revoked")
        ttl = b.leases[lease_id][0]
        b.leases[lease_id] = (ttl, b.clock() + ttl)
        return ttl

    async def revoke(self, lease_id: int) -> None:
        self._b().drop(lease_id)

    async def watch(self, prefix: str, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        b = self._b()
        nxt = b.revision + 1 if start_revision is None else start_revision
        while True:
            b = self._b()
            pending = [e for e in b.events if e.revision >= nxt and e.key.startswith(prefix)]
            for e in pending:
                nxt = e.revision + 1
                yield e
            if not pending:
                # NB: a plain poll, not an asyncio.Condition: wait_for(cond.wait()) can swallow a
                # cancellation on Python 3.11 and hang the task group that owns the watch.
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        return None
