"""The agent's API server ticks once a second (uvicorn's 0.1 s tick was a fifth of an idle agent's CPU
budget) and still refreshes its Date header on every tick and stops at once when told to."""

from __future__ import annotations

import asyncio

import uvicorn

from kagemusha.api._serve import _Server


def test_each_tick_refreshes_the_date_header_and_should_exit_wakes_it() -> None:
    async def app(scope: object, receive: object, send: object) -> None:  # never called
        raise AssertionError

    server = _Server(uvicorn.Config(app, log_config=None))
    ticks: list[int] = []
    real = server.on_tick

    async def on_tick(counter: int) -> bool:
        ticks.append(counter)
        return await real(counter)

    server.on_tick = on_tick  # type: ignore[method-assign]

    async def run() -> None:
        task = asyncio.create_task(server.main_loop())
        while not ticks:
            await asyncio.sleep(0.001)
        server.should_exit = True
        await asyncio.wait_for(task, 5)  # woken by the flag, not by the next tick

    asyncio.run(run())
    assert ticks and all(c % 10 == 0 for c in ticks), ticks  # uvicorn refreshes the header when c % 10 == 0
    assert server.server_state.default_headers, "the Date header was never set"
