"""The local SQLite store passes the store conformance suite, and fails clearly on bad files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kagemusha.errors import StoreUnavailable
from kagemusha.store import open_store
from kagemusha.testing import check_store


def test_check_store_local(tmp_path: Path) -> None:
    url = f"local:{tmp_path / 'store.db'}"
    asyncio.run(check_store(lambda: open_store(url, timeout=1.0)))


def test_corrupt_store_file_is_store_unavailable_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a sqlite database, just garbage " * 100)

    async def run() -> None:
        store = open_store(f"local:{bad}")
        try:
            with pytest.raises(StoreUnavailable, match=str(bad)):
                await store.get("x")
        finally:
            await store.close()

    asyncio.run(run())


def test_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    async def run() -> None:
        store = open_store(f"local:{tmp_path / 'nope' / 's.db'}")
        try:
            with pytest.raises(StoreUnavailable, match="does not exist"):
                await store.put("x", "y")
        finally:
            await store.close()

    asyncio.run(run())


def test_locked_store_times_out_as_unavailable(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "locked.db"

    async def run() -> None:
        store = open_store(f"local:{path}", timeout=0.2)
        await store.put("a", "b")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreUnavailable):
                await store.put("a", "c")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            await store.close()

    asyncio.run(run())
