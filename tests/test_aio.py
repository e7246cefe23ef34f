"""``kagemusha._aio.within`` never swallows a cancellation; nothing in kagemusha uses ``asyncio.wait_for``."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kagemusha._aio import cancel_and_wait, within

SRC = Path(__file__).resolve().parents[1] / "src" / "kagemusha"


def cancelled_as_it_completes(wait: Callable[[Awaitable[Any], float], Awaitable[Any]]) -> bool:
    """Whether a task cancelled in the very step its awaited future completes ends cancelled."""

    async def scenario() -> bool:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(wait(fut, 5.0))
        await asyncio.sleep(0)  # the task now waits for fut
        fut.set_result(1)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    return asyncio.run(scenario())


def test_within_ends_cancelled_when_cancelled_as_the_awaited_completes() -> None:
    assert cancelled_as_it_completes(within)


def test_within_times_out() -> None:
    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await within(asyncio.Event().wait(), 0.01)
        assert await within(asyncio.sleep(0, "x"), 1.0) == "x"

    asyncio.run(scenario())


def test_no_asyncio_wait_for_in_kagemusha() -> None:
    # NB: on Python 3.11 asyncio.wait_for swallows that cancellation (the agent once hung at leave)
    uses = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\basyncio\.wait_for\(", line) and not line.lstrip().startswith("#")]
    assert uses == [], f"use kagemusha._aio.within instead of asyncio.wait_for: {uses}"


@pytest.mark.skipif(__import__("sys").version_info >= (3, 12), reason="fixed in Python 3.12 (CPython gh-86296)")
def test_the_reason_asyncio_wait_for_swallows_that_cancellation_on_3_11() -> None:
    assert not cancelled_as_it_completes(asyncio.wait_for)


def stubborn_then_cancelled_caller(cancel: Callable[[asyncio.Task[Any]], Awaitable[None]]) -> str:
    """Run ``cancel(task)`` for a task that takes a while to end, cancelling the caller meanwhile."""

    async def scenario() -> str:
        release = asyncio.Event()

        async def stubborn() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()  # its own clean-up takes a while
                raise

        victim = asyncio.create_task(stubborn())
        await asyncio.sleep(0)

        async def caller() -> str:
            await cancel(victim)
            return "ran on after it was cancelled"

        task = asyncio.create_task(caller())
        await asyncio.sleep(0)
        task.cancel()  # e.g. the agent's task group ending
        release.set()
        try:
            return await task
        except asyncio.CancelledError:
            return "cancelled"

    return asyncio.run(scenario())


def test_cancel_and_wait_raises_the_callers_own_cancellation() -> None:
    assert stubborn_then_cancelled_caller(lambda t: cancel_and_wait([t])) == "cancelled"


def test_the_agents_cancel_worker_raises_the_callers_own_cancellation() -> None:
    from kagemusha.agent import Agent

    async def cancel_worker(t: asyncio.Task[Any]) -> None:
        await Agent._cancel_worker(None, SimpleNamespace(monitor_tasks=[], worker=t))  # type: ignore[arg-type]

    assert stubborn_then_cancelled_caller(cancel_worker) == "cancelled"


def test_cancel_and_wait_runs_to_the_end_in_the_finally_of_a_cancelled_caller() -> None:
    # an agent whose run was cancelled still fences in its finally: that needs every worker ended
    async def scenario() -> list[str]:
        done: list[str] = []
        workers = [asyncio.create_task(asyncio.Event().wait()) for _ in range(3)]

        async def run() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await cancel_and_wait(workers)
                done.append("fenced")

        task = asyncio.create_task(run())
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert all(w.cancelled() for w in workers)
        return done

    assert asyncio.run(scenario()) == ["fenced"]
