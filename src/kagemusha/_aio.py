"""``within``: await something for at most a number of seconds.

Use it instead of ``asyncio.wait_for``: on Python 3.11 (Debian 12's) ``wait_for`` swallows a
cancellation that arrives as the awaited thing completes (CPython gh-86296, fixed in 3.12 by
rewriting ``wait_for`` on top of ``asyncio.timeout``). The task then runs on after it was cancelled,
and a task group waiting for it waits forever: that is how an agent once hung at leave.
``asyncio.timeout`` has no such window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, raising ``TimeoutError`` after ``seconds`` (``None``: no limit)."""
    async with asyncio.timeout(seconds):
        return await aw
