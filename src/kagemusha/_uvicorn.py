"""A uvicorn server run inside a loop kagemusha owns: the agent's API, the domain's admin API.

Imported only where uvicorn is imported anyway (the agent's API, the domain master's small servers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

__all__ = ["EventServer"]


class EventServer(uvicorn.Server):
    """Leaves signals to its owner; ``should_exit`` wakes its main loop at once.

    NB: uvicorn's own main loop wakes every 0.1 s to look at ``should_exit`` (and to refresh its Date
    header once a second): in an idle agent that was 0.15-0.2 % of a core, a fifth of its 1 % budget
    (bench/scale.py). Here ``on_tick`` runs every ``tick`` seconds (``None``: never, so no Date header)
    and setting ``should_exit`` wakes the loop.
    """

    tick: float | None = None
    _exit: asyncio.Event | None = None
    _exit_flag = False

    @property
    def should_exit(self) -> bool:
        return self._exit_flag

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit_flag = value
        if value and self._exit is not None:
            self._exit.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return

    async def main_loop(self) -> None:
        self._exit = asyncio.Event()
        if self._exit_flag:
            return
        if self.tick is None:
            await self._exit.wait()
            return
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # NB: a multiple of 10: on_tick refreshes the Date header
            # NB: asyncio.timeout, not wait_for (which on Python 3.11 can swallow a cancellation)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick):
                    await self._exit.wait()
