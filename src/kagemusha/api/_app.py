"""The FastAPI application of one agent: cluster view, events, actions, live stream, metrics, web UI.

Reads for ``/cluster`` and ``/events`` and every action go through the control service that
whoever builds the API hands it (the agent gives it a store client of its own, opened like the
agent's, so API traffic never queues in front of lease renewals); the live stream and ``/metrics``
read the node's latest snapshot (``NodeState``), which the agent refreshes every cycle. The API never
imports the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kagemusha._aio import within
from kagemusha.api._auth import TokenSource, actor_of, resolve_path
from kagemusha.api._metrics import make_registry
from kagemusha.config import Config
from kagemusha.control import ActionFailed, ClusterControl, NodeState, UnknownName, UsageError, derive_status
from kagemusha.errors import KagemushaError, StoreUnavailable

__all__ = ["ApiState", "create_app"]

log = logging.getLogger("kagemusha.api")
STATIC = Path(__file__).parent / "static"
#: Seconds between two looks at the agent's snapshot in the live stream.
LIVE_TICK = 0.25
#: A comment line this often keeps proxies from closing an idle stream.
LIVE_KEEPALIVE = 15.0
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


# -- request bodies -------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float = Field(0.0, ge=0, le=3600, description="seconds to wait until done; 0 answers 202 at once")


class StartBody(_Body):
    """``POST /groups/{group}/start``."""

    node: str | None = Field(None, min_length=1, description="start it on this node (default: its best node)")


class StopBody(_Body):
    """``POST /groups/{group}/stop``."""


class MoveBody(_Body):
    """``POST /groups/{group}/move``."""

    to: str = Field(min_length=1, description="the node to move the group to")


class StandbyBody(_Body):
    """``POST /nodes/{node}/standby`` and ``/unstandby``."""


class ApiState:
    """What the routes share: the node, the token, and the control service.

    Args:
        node: the node whose agent serves this API (read live).
        control: the control service for reads and actions (closed by ``close``).
    """

    def __init__(self, node: NodeState, control: ClusterControl) -> None:
        self.node = node
        c = node.config.cluster
        self.tokens = TokenSource(resolve_path(node.config, c.api_token_file) if c.api_token_file else None)
        self.ctl = control
        self.closing = asyncio.Event()
        self.registry = make_registry(node)

    @property
    def config(self) -> Config:
        """The node's config now (NB: a running agent applies a new config from the store; never cache it)."""
        return self.node.config

    def control(self, request: Request) -> ClusterControl:
        return self.ctl.acting_as(actor_of(request))

    async def close(self) -> None:
        self.closing.set()
        await self.ctl.close()


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.kagemusha
    return state


_bearer = HTTPBearer(auto_error=False, description="the token in cluster.api_token_file")


def _auth(request: Request, _: Annotated[Any, Depends(_bearer)]) -> None:
    _state(request).tokens.check(request)


#: Why a node is not a member, as ``/health`` may say it to anyone: the head of the agent's reason when it is
#: one of these, else a generic word. NB: the full reason may name store endpoints, groups or errors; it
#: stays in the agent's log and in the authenticated ``/cluster``.
_PUBLIC_REASONS = frozenset({
    "lease expired at the store", "cannot renew lease", "agent exiting", "leave requested twice", "left the cluster",
})


def public_reason(reason: str) -> str:
    """The part of a fencing reason ``/health`` may show without a token (never endpoints, groups or errors)."""
    head = reason.split(":", 1)[0].strip()
    return head if head in _PUBLIC_REASONS else "fenced (see the agent's log)"


def _is_open(path: str) -> bool:
    """Paths served without the token: health checks and the web UI's static shell."""
    parts = path.split("/")
    return (path in ("/", "/health") or path.startswith("/static/")
            or (len(parts) == 4 and parts[1] == "groups" and parts[3] == "primary"))


def _field_error(field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{field}: {message}", "errors": [{"field": field, "message": message}]}, status_code=422
    )


def _audit_log(request: Request, action: str, **fields: Any) -> None:
    log.info("api action", extra={"kv": {"action": action, "by": actor_of(request), **fields}})


def _answer(data: Any, wait: float) -> JSONResponse:
    return JSONResponse(data, status_code=200 if wait > 0 else 202)


def _live_payload(state: ApiState) -> dict[str, Any]:
    a = state.node
    st = derive_status(state.config, a.snapshot, time.time())
    return {
        "status": st,
        "served_by": a.node,
        "member": a.is_member(),
        "group_nodes": {g.name: list(g.nodes) for g in state.config.groups},
    }


async def _live(state: ApiState, request: Request) -> AsyncIterator[str]:
    """Server-sent events: ``status`` when the cluster view changes, ``events`` when the log grows.

    NB: browsers' ``EventSource`` cannot send an ``Authorization`` header, so the web UI reads this
    stream with ``fetch`` (a ``ReadableStream``) instead, and the token never goes into a URL.
    """
    a = state.node
    hb = state.config.cluster.heartbeat_timeout
    last_status = last_events = ""
    last_snap: object = None
    snap_seen = time.monotonic()
    quiet_since = time.monotonic()
    yield "retry: 1000\n\n"
    while not state.closing.is_set():
        if await request.is_disconnected():
            return
        now = time.monotonic()
        if a.snapshot is not last_snap:
            last_snap, snap_seen = a.snapshot, now
        payload = _live_payload(state)
        payload["stale"] = now - snap_seen > 3 * hb + 1.0  # the agent has not read the store for a while
        text = json.dumps(payload, sort_keys=True)
        if text != last_status:
            last_status = text
            yield f"event: status\ndata: {text}\n\n"
            quiet_since = now
        events = a.snapshot.events[-100:]
        etext = json.dumps(events, default=str)
        if etext != last_events:
            last_events = etext
            yield f"event: events\ndata: {etext}\n\n"
            quiet_since = now
        if now - quiet_since > LIVE_KEEPALIVE:
            yield ": keepalive\n\n"
            quiet_since = now
        try:
            await within(state.closing.wait(), LIVE_TICK)
        except TimeoutError:
            pass


def create_app(node: NodeState, control: ClusterControl) -> FastAPI:
    """The API and web UI of ``node``.

    Usage::

        app = create_app(agent, control)   # serve(agent, control) does this and runs it on uvicorn
        ...
        await app.state.kagemusha.close()

    Args:
        node: the serving node (its config, snapshot and statistics are read live).
        control: the control service for reads and actions; the app closes it on ``close``.
    """
    app = FastAPI(
        title="kagemusha",
        summary=f"cluster {node.config.cluster.name}, node {node.node}",
        description="Every endpoint but /health and /groups/{group}/primary needs `Authorization: Bearer <token>`.",
        version="1",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    state = ApiState(node, control)
    app.state.kagemusha = state

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response | None = None
        if not _is_open(request.url.path):
            # NB: before routing: FastAPI parses and validates a body before the router's token dependency
            # runs, so a caller without the token would otherwise learn what an endpoint expects (400/422).
            try:
                state.tokens.check(request)
            except HTTPException as refused:
                response = JSONResponse({"detail": refused.detail}, status_code=refused.status_code,
                                        headers=refused.headers)
        if response is None:
            response = await call_next(request)
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        response.headers["X-Kagemusha-Node"] = node.node
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                errors.append({"field": "body", "message": f"not valid JSON ({e.get('ctx', {}).get('error', 'decode error')})"})
                continue
            loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
            errors.append({"field": ".".join(loc) or "body", "message": str(e.get("msg", "invalid"))})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body at all
            return _field_error("body", f"cannot be parsed: {exc.detail}; expected a JSON object")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(UsageError)
    async def usage(request: Request, exc: UsageError) -> JSONResponse:
        # One place validates actions (ClusterControl); a name in the path that does not exist is 404,
        # a bad value in the body is 422 naming the field.
        if isinstance(exc, UnknownName) and not exc.field:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        if exc.field:
            return _field_error(exc.field, str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ActionFailed)
    async def failed(request: Request, exc: ActionFailed) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"cannot reach the cluster store: {exc}"}, status_code=503)

    @app.exception_handler(KagemushaError)
    async def other(request: Request, exc: KagemushaError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    # -- open: health for load balancers, and the web UI's static shell ---------------

    @app.get("/health", tags=["health"])
    async def health() -> JSONResponse:
        """200 while this agent is in the cluster (holds its lease), 503 otherwise."""
        member = node.is_member()
        body = {"node": node.node, "member": member}
        fenced = node.statistics().fenced_reason
        if not member and fenced:
            body["reason"] = public_reason(fenced)
        return JSONResponse(body, status_code=200 if member else 503)

    @app.get("/groups/{group}/primary", tags=["health"])
    async def primary(group: str) -> JSONResponse:
        """200 only on the node running ``group`` (503 elsewhere), like Patroni's ``/primary``."""
        if group not in {g.name for g in state.config.groups}:
            # NB: open endpoint: say nothing about which groups exist.
            return JSONResponse({"detail": "no such group"}, status_code=404)
        runs = node.runs(group)
        return JSONResponse({"node": node.node, "group": group, "running": runs}, status_code=200 if runs else 503)

    # Load balancers often probe with HEAD.
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/groups/{group}/primary", primary, methods=["HEAD"], include_in_schema=False)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- authenticated -------------------------------------------------------------------

    api = APIRouter(dependencies=[Depends(_auth)])

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @api.get("/cluster", tags=["cluster"])
    async def cluster(request: Request) -> JSONResponse:
        """Nodes, groups, resources and monitors (the JSON of ``kagemusha status --json``), read from the store."""
        return JSONResponse(await state.control(request).status())

    @api.get("/events", tags=["cluster"])
    async def events(request: Request, limit: int = Query(100, ge=1, le=500)) -> JSONResponse:
        """The most recent events, oldest first: starts, stops, failovers, operator actions (with who and why)."""
        return JSONResponse({"events": await state.control(request).events(limit)})

    @api.get("/live", tags=["cluster"], response_class=StreamingResponse)
    async def live(request: Request) -> StreamingResponse:
        """Server-sent events: ``status`` (the cluster view) and ``events`` (the log), sent when they change."""
        return StreamingResponse(
            _live(state, request), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @api.get("/metrics", tags=["metrics"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format: group state and owner, failovers, monitor failures, lease and store latency."""
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @api.post("/groups/{group}/start", tags=["actions"])
    async def start_group(request: Request, group: str, body: StartBody | None = None) -> JSONResponse:
        """Start ``group`` (on ``node``, or its best node); clears its fail counts."""
        body = body or StartBody.model_validate({})
        _audit_log(request, "group start", group=group, node=body.node or "")
        return _answer(await state.control(request).start_group(group, body.node, wait=body.wait), body.wait)

    @api.post("/groups/{group}/stop", tags=["actions"])
    async def stop_group(request: Request, group: str, body: StopBody | None = None) -> JSONResponse:
        """Stop ``group``: it stays offline until started."""
        body = body or StopBody.model_validate({})
        _audit_log(request, "group stop", group=group)
        return _answer(await state.control(request).stop_group(group, wait=body.wait), body.wait)

    @api.post("/groups/{group}/move", tags=["actions"])
    async def move_group(request: Request, group: str, body: MoveBody) -> JSONResponse:
        """Move ``group`` to node ``to`` (a planned switchover: stop here, start there with CLP_EVENT=START)."""
        _audit_log(request, "group move", group=group, to=body.to)
        return _answer(await state.control(request).move_group(group, body.to, wait=body.wait), body.wait)

    async def _monitor(request: Request, group: str, monitor: str, on: bool) -> JSONResponse:
        _audit_log(request, "monitor suspend" if on else "monitor resume", group=group, monitor=monitor)
        return JSONResponse(await state.control(request).suspend_monitor(group, monitor, on))

    @api.post("/groups/{group}/monitors/{monitor}/suspend", tags=["actions"])
    async def suspend_monitor(request: Request, group: str, monitor: str) -> JSONResponse:
        """Suspend a monitor (CLUSTERPRO's ``clpmonctrl -s``): its checks stop until resumed."""
        return await _monitor(request, group, monitor, True)

    @api.post("/groups/{group}/monitors/{monitor}/resume", tags=["actions"])
    async def resume_monitor(request: Request, group: str, monitor: str) -> JSONResponse:
        """Resume a suspended monitor (``clpmonctrl -r``)."""
        return await _monitor(request, group, monitor, False)

    async def _standby(request: Request, node: str, on: bool, body: StandbyBody | None) -> JSONResponse:
        body = body or StandbyBody.model_validate({})
        _audit_log(request, "node standby" if on else "node unstandby", node=node)
        return _answer(await state.control(request).set_standby(node, on, wait=body.wait), body.wait)

    @api.post("/nodes/{node}/standby", tags=["actions"])
    async def standby(request: Request, node: str, body: StandbyBody | None = None) -> JSONResponse:
        """Drain ``node``: its groups move away and it takes no new ones until unstandby."""
        return await _standby(request, node, True, body)

    @api.post("/nodes/{node}/unstandby", tags=["actions"])
    async def unstandby(request: Request, node: str, body: StandbyBody | None = None) -> JSONResponse:
        """Let ``node`` take groups again (groups do not move back unless their failback is auto)."""
        return await _standby(request, node, False, body)

    app.include_router(api)
    return app
