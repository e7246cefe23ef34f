"""The agent's REST API and web UI (FastAPI on uvicorn), served by every agent at its node's address."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kagemusha.agent import Agent


async def serve(agent: Agent) -> None:
    """Serve the API until cancelled. Placeholder until the API part lands: serves nothing."""
    import asyncio

    await asyncio.Event().wait()


__all__ = ["serve"]
