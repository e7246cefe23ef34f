"""A store client that counts the writes made through it (the agent's "did I write since I last read?").

Why: the agent skips reading the whole cluster prefix when nothing changed since its last read. Changes
by others arrive through its watch; its own writes do too, but only a moment later, and in that moment a
decision made on the old snapshot could undo what it just did (a group it just took looks unowned). So
any write through this client, counted *before* it is sent, makes the next cycle read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from kagemusha.store._base import KeyValue, Lease, Store, StoreCapabilities, WatchEvent

__all__ = ["CountingStore"]


class CountingStore(Store):
    """Wraps ``inner``; ``writes`` counts every call that may change a key (put, cas, delete, revoke).

    Lease grants and keepalives change no key and are not counted. A call counts when it is made,
    whether it succeeds or not (a write that times out may still land).
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.writes = 0

    @property
    def capabilities(self) -> StoreCapabilities:  # type: ignore[override]  # the inner backend's
        return self.inner.capabilities

    async def get(self, key: str) -> KeyValue | None:
        return await self.inner.get(key)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return await self.inner.get_prefix(prefix)

    async def put(self, key: str, value: str, *, lease: int | None = None) -> int:
        self.writes += 1
        return await self.inner.put(key, value, lease=lease)

    async def cas(self, key: str, value: str, *, expected_revision: int, lease: int | None = None) -> bool:
        self.writes += 1
        return await self.inner.cas(key, value, expected_revision=expected_revision, lease=lease)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        self.writes += 1
        return await self.inner.delete(key, expected_revision=expected_revision)

    async def grant_lease(self, ttl: float) -> Lease:
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease_id: int) -> float:
        return await self.inner.keepalive(lease_id)

    async def revoke(self, lease_id: int) -> None:
        self.writes += 1  # deletes the lease's keys
        await self.inner.revoke(lease_id)

    def watch(self, prefix: str, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        return self.inner.watch(prefix, start_revision=start_revision)

    async def close(self) -> None:
        await self.inner.close()
