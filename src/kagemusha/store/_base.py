"""The coordination store contract every backend implements.

Duties: a flat key space of UTF-8 string values with a global, monotonically
increasing revision; leases that delete their keys when they expire; atomic
compare-and-set on a key's modification revision; and watches that deliver
every change under a prefix in revision order and can resume from a revision.

Atomicity: each method is atomic on its own. ``cas`` and ``delete`` with an
expected revision compare and write in one step: of two callers racing on the
same revision exactly one gets ``True``.

Errors: "could not ask" (timeout, lost connection, locked or corrupt file)
raises ``StoreUnavailable`` (mapped at the boundary with ``raise ... from``);
"lost the race" is a plain ``False``; using a lease that is gone raises
``LeaseExpired``. Nothing else escapes a backend.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Self

__all__ = [
    "KeyValue",
    "Lease",
    "Store",
    "StoreCapabilities",
    "WatchEvent",
    "WatchEventType",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as read from the store.

    ``mod_revision`` is the store revision of the key's last write (the value a
    ``cas`` compares against); ``lease`` is the id of the lease the key is
    attached to, or ``None``.
    """

    key: str
    value: str
    mod_revision: int
    create_revision: int
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease: keys put under it vanish when it expires or is revoked."""

    id: int
    ttl: float


class WatchEventType(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change seen by a watch. For ``DELETE`` the value is ``""``."""

    type: WatchEventType
    key: str
    value: str
    revision: int


@dataclass(frozen=True, slots=True)
class StoreCapabilities:
    """What a backend can promise.

    ``spans_hosts``: agents on different machines can share it (etcd: yes;
    local SQLite: no, so a multi-host config on it is refused).
    ``linearizable``: reads see every write that completed before them.
    """

    spans_hosts: bool
    linearizable: bool


class Store(abc.ABC):
    """Async key-value store with leases, compare-and-set and watches.

    Usage::

        store = open_store("local:/tmp/kg.db")
        lease = await store.grant_lease(1.0)
        won = await store.cas("groups/g/owner", '{"node": "n1"}', expected_revision=0, lease=lease.id)
        await store.keepalive(lease.id)
        await store.close()
    """

    capabilities: ClassVar[StoreCapabilities]

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None:
        """Return the key or ``None`` when it does not exist.

        Raises:
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Return every key starting with ``prefix`` (sorted by key) and the store revision read at.

        Raises:
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    async def put(self, key: str, value: str, *, lease: int | None = None) -> int:
        """Write ``key`` unconditionally; return the new revision.

        Raises:
            LeaseExpired: ``lease`` does not exist.
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    async def cas(
        self, key: str, value: str, *, expected_revision: int, lease: int | None = None
    ) -> bool:
        """Write ``key`` only if its ``mod_revision`` equals ``expected_revision``.

        ``expected_revision=0`` means "only if the key does not exist" (acquire).
        Returns ``False`` when another writer won; the key is then untouched.

        Raises:
            LeaseExpired: ``lease`` does not exist.
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    async def delete(self, key: str, *, expected_revision: int | None = None) -> bool:
        """Delete ``key``; with ``expected_revision``, only if it still has that revision.

        Returns ``True`` when a key was deleted, ``False`` when it did not
        exist or its revision differed.

        Raises:
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    async def grant_lease(self, ttl: float) -> Lease:
        """Create a lease that expires ``ttl`` seconds after its last keepalive.

        NB: etcd rounds TTLs up to whole seconds; callers must not assume a
        shorter TTL than they asked for is enforced exactly.

        Raises:
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    async def keepalive(self, lease_id: int) -> float:
        """Renew the lease; return the TTL it was renewed to.

        Raises:
            LeaseExpired: the lease is gone (its keys with it).
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    async def revoke(self, lease_id: int) -> None:
        """Revoke the lease and delete its keys at once. Revoking a gone lease is not an error.

        Raises:
            StoreUnavailable: the store could not be asked.
        """

    @abc.abstractmethod
    def watch(self, prefix: str, *, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Yield every change under ``prefix`` in revision order.

        With ``start_revision``, replay changes from that revision on (inclusive)
        before live ones, so a watcher that reconnects loses nothing. Changes
        caused by lease expiry appear as ``DELETE`` events.

        Raises (from iteration):
            StoreUnavailable: the watch broke and could not be resumed; the caller
                re-reads and watches again from its last revision + 1.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads. Leases are not revoked."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
