"""Conformance suite for the ``Store`` contract.

Run it against every backend::

    await check_store(lambda: open_store("local:/tmp/x.db"))

``make_store`` returns a fresh, connected store each call (the suite opens two
to race them). Each check uses keys under a random prefix so a shared etcd can
be reused. Raises ``AssertionError`` naming the failed duty.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from kagemusha._aio import within
from kagemusha.errors import LeaseExpired
from kagemusha.store._base import Store, WatchEvent, WatchEventType

__all__ = ["check_store"]

MakeStore = Callable[[], Store | Awaitable[Store]]


async def _make(make_store: MakeStore) -> Store:
    s = make_store()
    if isinstance(s, Store):
        return s
    return await s


async def check_store(make_store: MakeStore, *, lease_ttl: float = 1.0) -> None:
    """Check every duty of the store contract against a real backend.

    Args:
        make_store: returns a new connected store.
        lease_ttl: TTL used for expiry checks (etcd rounds up to whole seconds).

    Raises:
        AssertionError: a duty does not hold; the message names it.
    """
    a = await _make(make_store)
    b = await _make(make_store)
    try:
        p = f"/kgtest/{uuid.uuid4().hex[:8]}/"
        await _check_get_put_delete(a, b, p)
        await _check_cas(a, b, p)
        await _check_cas_race(a, b, p)
        await _check_prefix(a, p)
        await _check_leases(a, b, p, lease_ttl)
        await _check_watch(a, b, p, lease_ttl)
    finally:
        await a.close()
        await b.close()


async def _check_get_put_delete(a: Store, b: Store, p: str) -> None:
    assert await a.get(p + "missing") is None, "get of a missing key must return None"
    r1 = await a.put(p + "k", "v1")
    kv = await b.get(p + "k")
    assert kv is not None and kv.value == "v1", "a put must be visible to another client"
    assert kv.mod_revision == r1, "put must return the key's new mod_revision"
    r2 = await a.put(p + "k", "v2")
    assert r2 > r1, "revisions must increase"
    kv2 = await a.get(p + "k")
    assert kv2 is not None and kv2.create_revision == kv.create_revision, "create_revision is kept by updates"
    assert await a.put(p + "u", "ünïcode ✓") > 0
    kvu = await b.get(p + "u")
    assert kvu is not None and kvu.value == "ünïcode ✓", "values are UTF-8 strings"
    assert await b.delete(p + "k") is True, "delete of an existing key returns True"
    assert await b.delete(p + "k") is False, "delete of a missing key returns False"
    assert await a.get(p + "k") is None


async def _check_cas(a: Store, b: Store, p: str) -> None:
    k = p + "cas"
    assert await a.cas(k, "x", expected_revision=0) is True, "cas with 0 creates a missing key"
    assert await b.cas(k, "y", expected_revision=0) is False, "cas with 0 on an existing key loses"
    kv = await a.get(k)
    assert kv is not None and kv.value == "x", "a lost cas leaves the key untouched"
    assert await b.cas(k, "z", expected_revision=kv.mod_revision) is True, "cas on the current revision wins"
    assert await a.cas(k, "w", expected_revision=kv.mod_revision) is False, "cas on a stale revision loses"
    kv2 = await a.get(k)
    assert kv2 is not None and kv2.value == "z"
    assert await a.delete(k, expected_revision=kv.mod_revision) is False, "delete on a stale revision loses"
    assert await a.delete(k, expected_revision=kv2.mod_revision) is True


async def _check_cas_race(a: Store, b: Store, p: str) -> None:
    for i in range(20):
        k = f"{p}race{i}"
        ra, rb = await asyncio.gather(
            a.cas(k, "a", expected_revision=0), b.cas(k, "b", expected_revision=0)
        )
        assert ra != rb, f"exactly one of two racing cas must win (got a={ra}, b={rb})"
        kv = await a.get(k)
        assert kv is not None and kv.value == ("a" if ra else "b"), "the winner's value is stored"


async def _check_prefix(a: Store, p: str) -> None:
    q = p + "pre/"
    for name in ("b", "a", "c"):
        await a.put(q + name, name)
    await a.put(p + "pre-other", "no")
    items, rev = await a.get_prefix(q)
    assert [kv.key for kv in items] == [q + "a", q + "b", q + "c"], "get_prefix returns sorted keys under the prefix only"
    assert rev >= max(kv.mod_revision for kv in items), "get_prefix returns the revision it read at"


async def _check_leases(a: Store, b: Store, p: str, ttl: float) -> None:
    lease = await a.grant_lease(ttl)
    assert lease.ttl >= ttl, "a lease is granted with at least the asked TTL"
    k = p + "leased"
    assert await a.cas(k, "owner", expected_revision=0, lease=lease.id) is True
    kv = await b.get(k)
    assert kv is not None and kv.lease == lease.id, "a key records its lease"
    # Keepalive holds the key past the TTL.
    deadline = asyncio.get_running_loop().time() + ttl * 2
    while asyncio.get_running_loop().time() < deadline:
        assert await a.keepalive(lease.id) >= ttl * 0.5
        await asyncio.sleep(ttl / 5)
    assert await b.get(k) is not None, "a kept-alive lease keeps its keys"
    # Without keepalive the key goes.
    await asyncio.sleep(lease.ttl + 1.5)
    assert await b.get(k) is None, "keys vanish once their lease expires"
    try:
        await a.keepalive(lease.id)
    except LeaseExpired:
        pass
    else:
        raise AssertionError("keepalive of an expired lease must raise LeaseExpired")
    try:
        await a.put(p + "late", "x", lease=lease.id)
    except LeaseExpired:
        pass
    else:
        raise AssertionError("put with an expired lease must raise LeaseExpired")
    # Revoke deletes at once; revoking twice is fine.
    l2 = await a.grant_lease(ttl * 10)
    await a.put(p + "rev", "x", lease=l2.id)
    await a.revoke(l2.id)
    assert await b.get(p + "rev") is None, "revoke deletes the lease's keys at once"
    await a.revoke(l2.id)


async def _next(it: object, timeout: float) -> WatchEvent:
    return await within(it.__anext__(), timeout)  # type: ignore[attr-defined]


async def _check_watch(a: Store, b: Store, p: str, ttl: float) -> None:
    q = p + "w/"
    _, rev0 = await a.get_prefix(q)
    it = b.watch(q, start_revision=rev0 + 1)
    try:
        r1 = await a.put(q + "x", "1")
        await a.put(p + "outside", "no")
        r2 = await a.put(q + "y", "2")
        await a.delete(q + "x")
        e1 = await _next(it, 5)
        e2 = await _next(it, 5)
        e3 = await _next(it, 5)
        assert (e1.type, e1.key, e1.value, e1.revision) == (WatchEventType.PUT, q + "x", "1", r1), f"watch event 1: {e1}"
        assert (e2.type, e2.key, e2.revision) == (WatchEventType.PUT, q + "y", r2), f"watch skips keys outside the prefix: {e2}"
        assert (e3.type, e3.key) == (WatchEventType.DELETE, q + "x"), f"watch reports deletes: {e3}"
        # Lease expiry shows as a delete.
        lease = await a.grant_lease(ttl)
        await a.put(q + "z", "3", lease=lease.id)
        e4 = await _next(it, 5)
        assert e4.type == WatchEventType.PUT and e4.key == q + "z"
        e5 = await _next(it, lease.ttl + 5)
        assert (e5.type, e5.key) == (WatchEventType.DELETE, q + "z"), f"lease expiry shows as a delete: {e5}"
    finally:
        await it.aclose()  # type: ignore[attr-defined]
    # Resume: a watch started from an old revision replays what happened since.
    it2 = b.watch(q, start_revision=r2)
    try:
        e = await _next(it2, 5)
        assert e.revision == r2 and e.key == q + "y", f"watch replays from start_revision: {e}"
    finally:
        await it2.aclose()  # type: ignore[attr-defined]
