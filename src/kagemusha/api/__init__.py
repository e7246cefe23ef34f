"""The agent's REST API and web UI (FastAPI on uvicorn), served by every agent at its node's address.

Every endpoint but ``GET /health`` and ``GET /groups/<g>/primary`` (and the web UI's
static shell) needs ``Authorization: Bearer <token>``, the token being the content of
``cluster.api_token_file``. See ``docs/operations.md``.

Usage::

    from kagemusha.api import create_app, serve

    await serve(agent)          # what Agent.run does in its task group
    app = create_app(agent)     # the ASGI app alone
"""

from __future__ import annotations

from kagemusha.api._app import create_app
from kagemusha.api._serve import serve

__all__ = ["create_app", "serve"]
