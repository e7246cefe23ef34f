"""A virtual-time asyncio event loop: time jumps to the next timer instead of passing.

``VirtualTimeLoop`` is a ``SelectorEventLoop`` whose ``time()`` is a number it keeps itself and whose
selector never blocks: when no callback is ready, the loop's own scheduler asks the selector to wait
until the next timer, and the selector simply moves the virtual clock forward by that much. An hour of
lease renewals therefore runs in as long as its callbacks take, and two runs of the same program give the
same interleaving (the ready queue is FIFO and the timer heap is ordered by time, then by insertion).

NB: there is no real I/O on this loop. A coroutine that waits for a socket, a subprocess or a thread
(``asyncio.to_thread``, ``run_in_executor``) never hears back: the selector reports nothing, ever. The
simulation therefore runs only code that waits on timers and futures. ``select(None)`` (nothing ready,
no timer) would block a real loop forever; here it raises ``Deadlock``.

Usage::

    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(main())   # asyncio.sleep(3600) returns at once, loop.time() == 3600.0
    finally:
        loop.close()
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

__all__ = ["Deadlock", "VirtualTimeLoop"]


class Deadlock(RuntimeError):
    """Every task waits on something that no timer will ever wake (a real loop would hang)."""


class _VirtualSelector(selectors.BaseSelector):
    """Keeps registrations (the loop registers its self-pipe) but never reports I/O; waiting moves time."""

    def __init__(self) -> None:
        self._map: dict[int, selectors.SelectorKey] = {}
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._map.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise Deadlock("virtual loop: no callback ready and no timer scheduled")
        if timeout > 0:
            self.loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self._map.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time; see the module docstring."""

    def __init__(self, start: float = 0.0) -> None:
        self._vtime = start
        sel = _VirtualSelector()
        super().__init__(sel)
        sel.loop = self
        # Timers due within this of "now" run now; virtual time is exact, so only float rounding matters.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._vtime

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (the selector's "wait")."""
        self._vtime += seconds

    # No self-pipe: nothing on this loop comes from another thread or a signal.
    def _make_self_pipe(self) -> None:
        pass

    def _close_self_pipe(self) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:  # type: ignore[override]
        raise NotImplementedError("no signals on the virtual-time loop")

    def remove_signal_handler(self, sig: int) -> bool:
        return False
