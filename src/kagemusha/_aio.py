"""``within``: await something for at most a number of seconds; ``cancel_and_wait``: end tasks.

Use it instead of ``asyncio.wait_for``: on Python 3.11 (Debian 12's) ``wait_for`` swallows a
cancellation that arrives as the awaited thing completes (CPython gh-86296, fixed in 3.12 by
rewriting ``wait_for`` on top of ``asyncio.timeout``). The task then runs on after it was cancelled,
and a task group waiting for it waits forever: that is how an agent once hung at leave.
``asyncio.timeout`` has no such window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

__all__ = ["cancel_and_wait", "within"]

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    """``await aw``, raising ``TimeoutError`` after ``seconds`` (``None``: no limit)."""
    async with asyncio.timeout(seconds):
        return await aw


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, whatever it ended with (the current task is skipped).

    NB: a cancellation of the *caller* that arrives while it waits is the caller's own, and is raised:
    the usual ``except (CancelledError, Exception): pass`` around ``await task`` swallowed it, and the
    caller ran on after its task group had cancelled it (the same hang as ``wait_for``'s, one level
    up). A cancellation the caller had before it called (an agent fencing in the ``finally`` of its
    cancelled run) is not new, and does not stop it: the count of requests is compared, not tested.
    """
    me = asyncio.current_task()
    before = me.cancelling() if me is not None else 0
    todo = [t for t in tasks if t is not me]
    for t in todo:
        t.cancel()
    for t in todo:
        try:
            await t
        except asyncio.CancelledError:
            if me is not None and me.cancelling() > before:
                raise
        except Exception:  # noqa: BLE001, S110 - how a cancelled task ended is not news; its guard logged it
            pass
