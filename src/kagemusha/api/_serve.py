"""Run the API on uvicorn inside the agent's event loop.

NB: uvicorn installs its own SIGINT/SIGTERM handlers with ``signal.signal``,
which would replace the agent's (a SIGTERM must make the agent leave the
cluster gracefully, not just stop the web server), so ``_Server`` captures no
signals. The server stops when the agent cancels its task. A failure to serve
(port taken, bad certificate) is logged and retried: the API must never take
the agent, and with it the node's groups, down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn

from kagemusha._uvicorn import EventServer
from kagemusha.api._app import create_app
from kagemusha.api._auth import resolve_path

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kagemusha.control import ClusterControl, NodeState

__all__ = ["serve"]

log = logging.getLogger("kagemusha.api")
#: Retry a failed start after 0.5 s, doubling up to this (a port freed by a dying process comes back fast).
RETRY_SECONDS = 5.0


class _Server(EventServer):
    """The agent's API server: ticks once a second (its Date header), closed at once when the agent goes."""

    tick = 1.0

    def close_now(self) -> None:
        """Stop listening and drop every connection (the agent is going away; nothing waits for clients)."""
        self.should_exit = self.force_exit = True
        for server in getattr(self, "servers", []):
            server.close()
        for conn in list(self.server_state.connections):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.close()


def _uvicorn_config(agent: NodeState, app: FastAPI) -> uvicorn.Config:
    c = agent.config.cluster
    host, _, port = agent.config.node(agent.node).address.rpartition(":")
    host = host.strip("[]")
    ssl: dict[str, str] = {}
    if c.tls_cert_file and c.tls_key_file:
        ssl = {"ssl_certfile": str(resolve_path(agent.config, c.tls_cert_file)),
               "ssl_keyfile": str(resolve_path(agent.config, c.tls_key_file))}
    return uvicorn.Config(
        app, host=host, port=int(port), log_config=None, access_log=False, lifespan="off",
        server_header=False, timeout_graceful_shutdown=1, **ssl,  # type: ignore[arg-type]
    )


async def serve(agent: NodeState, make_control: Callable[[], ClusterControl]) -> None:
    """Serve the API and web UI at the node's ``address`` until cancelled.

    Runs in the agent's task group (``Agent.run``); never raises but ``CancelledError``.

    Args:
        agent: the serving node.
        make_control: builds the control service the API uses (its own store client).
    """
    address = agent.config.node(agent.node).address
    problem = ""
    delay = 0.5

    async def retry(why: str) -> None:
        nonlocal problem, delay
        if why != problem:
            log.error("api not serving, retrying", extra={"kv": {"reason": why, "address": address}})
            problem = why
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_SECONDS)

    while True:
        try:
            app = create_app(agent, make_control())
            break
        except Exception as exc:  # noqa: BLE001 - e.g. the API's store client cannot be made; never kill the agent
            await retry(f"{type(exc).__name__}: {exc}")
    try:
        while True:
            server: _Server | None = None
            try:
                server = _Server(_uvicorn_config(agent, app))
                await server.serve()
                why = "server stopped"
                delay = 0.5
            except asyncio.CancelledError:
                if server is not None:
                    server.close_now()
                raise
            except SystemExit:  # uvicorn exits on a bind failure; it logged the OSError
                why = "cannot listen (see the error above)"
            except Exception as exc:  # noqa: BLE001 - bad certificate, ...: log, retry; never take the agent down
                why = f"{type(exc).__name__}: {exc}"
            await retry(why)
    finally:
        await app.state.kagemusha.close()
