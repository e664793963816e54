"""The server's routes: plain module-level handlers on two routers, each taking the server's
state (`ServerState`, from `request.app.state.smoa`) as a dependency, so one can be read,
and called in a test, alone. `create_app` wires them up.

    api:    GET /health, GET /v1/models[/{name}], POST /v1/chat/completions, GET /traces.json
    pages:  GET / (to /traces), GET /traces, GET /traces/{id}[.json]

Everything but /health and the pages needs the API key when the server has one (`require_key`);
the pages also take it once as ?key=, which sets a cookie (`page_auth`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from .admission import wait_disconnect
from .chat import TRACE_HEADER, build_pipeline_for, complete, start_stream
from .errors import ApiError, error_response, shutting_down
from .request import parse_request, to_messages
from .state import ServerState

log = logging.getLogger("smoa.server")

_TRACE_ID = re.compile(r"^[0-9a-f]{6,64}$")
KEY_COOKIE = "smoa_key"
MAX_OFFSET = 2**53  # SQLite takes 64-bit offsets; far larger ones are typing mistakes
MAX_ROWS = 500  # rows of one trace listing


def get_state(request: Request) -> ServerState:
    """The state `create_app` made for this app."""
    state: ServerState = request.app.state.smoa
    return state


State = Annotated[ServerState, Depends(get_state)]
Limit = Annotated[int, Query(ge=1, le=MAX_OFFSET)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def authorized(request: Request, state: ServerState) -> bool:
    """The server has no key, or the request carries it (as a bearer header or the pages' cookie)."""
    key = state.options.api_key
    if not key:
        return True
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(KEY_COOKIE, "")
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


def require_key(request: Request, state: State) -> None:
    """A dependency: 401 unless `authorized`."""
    if not authorized(request, state):
        raise ApiError(
            401, "missing or wrong API key: send 'Authorization: Bearer <key>' (the server's SMOA_API_KEY)",
            "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
        )


def page_auth(request: Request, state: ServerState) -> Response | None:
    """Pages accept the key as a bearer header, a cookie, or once as ?key= (which sets the cookie):
    None when the page may be shown, else the response to send instead."""
    key = request.query_params.get("key")
    api_key = state.options.api_key
    if key is not None and api_key and hmac.compare_digest(key.encode(), api_key.encode()):
        resp = RedirectResponse(request.url.path, status_code=303)
        resp.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
        return resp
    if not authorized(request, state):
        from ..web import render_message_page

        return HTMLResponse(
            render_message_page("API key needed", "This server needs its API key: open this page once with ?key=YOUR_KEY."),
            status_code=401,
        )
    return None


api = APIRouter()
pages = APIRouter(include_in_schema=False)
keyed = [Depends(require_key)]


@api.get("/health")
async def health(state: State) -> dict[str, Any]:
    return {"status": "ok", "in_flight": state.in_flight, "queued": state.admission.queued,
            "models": len(state.pipelines.available)}


@api.get("/v1/models", dependencies=keyed)
async def list_models(state: State) -> dict[str, Any]:
    return {"object": "list", "data": [model_obj(state, n) for n in state.pipelines.available]}


@api.get("/v1/models/{name}", dependencies=keyed)
async def get_model(name: str, state: State) -> dict[str, Any]:
    if name not in state.pipelines.available:
        raise ApiError(404, f"model {name!r} does not exist", "invalid_request_error", "model_not_found", "model")
    return model_obj(state, name)


@api.post("/v1/chat/completions", dependencies=keyed)
async def chat_completions(request: Request, state: State) -> Response:
    body = await read_body(request, state.options.max_request_bytes)
    req = parse_request(body)
    pipe = build_pipeline_for(state, req)
    messages = to_messages(req.messages)
    gone = asyncio.ensure_future(wait_disconnect(request.receive))  # a client that leaves frees its place
    try:
        if not await _unless_gone(state.admission.acquire(), gone):
            return Response(status_code=499)  # nobody is listening any more
        # from here the slot belongs to the query's task, which frees it when it ends
        base = str(request.base_url).rstrip("/")
        if not req.stream:
            got = await complete(state, req, pipe, messages, base, gone)
            if got is None:
                return Response(status_code=499)
            return JSONResponse(got[1], headers=got[2])
        started = await start_stream(state, req, pipe, messages, base, gone)
        if started is None:
            return Response(status_code=499)
        body_iter, headers = started
    except asyncio.CancelledError:
        # only the server cancels a handler: it is shutting down past its grace period
        # (the query was cancelled and its partial trace saved)
        log.warning("a query was cancelled before its reply: the server is shutting down")
        return error_response(shutting_down())
    finally:
        gone.cancel()  # the streaming response watches the connection itself from here
    return EventStream(
        body_iter, media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class EventStream(StreamingResponse):
    """A streamed reply that the server's shutdown may cancel (uvicorn cancels what still runs
    when its grace period is over). The body iterator then sends a final error event and
    [DONE] (chat._stream_body); this logs one line instead of letting the cancel escape to
    uvicorn, which would log it as "Exception in ASGI application" with a traceback."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            trace_id = self.headers.get(TRACE_HEADER.lower(), "?")
            log.warning("streamed reply %s cancelled: the server is shutting down", trace_id)


@api.get("/traces.json", dependencies=keyed)
async def traces_json(state: State, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    rows = await asyncio.to_thread(state.store.recent, min(limit, MAX_ROWS), offset)
    return {"object": "list", "data": rows, "store": state.store.describe()}


@pages.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/traces")


@pages.get("/traces")
async def traces_page(request: Request, state: State, limit: Limit = 50, offset: Offset = 0) -> Response:
    denied = page_auth(request, state)
    if denied is not None:
        return denied
    from ..web import render_list_page

    limit = min(limit, MAX_ROWS)
    rows = await asyncio.to_thread(state.store.recent, limit, offset)
    total = await asyncio.to_thread(state.store.count)
    return HTMLResponse(render_list_page(rows, total=total, limit=limit, offset=offset, store=state.store.describe()))


@pages.get("/traces/{name}")
async def trace_page(name: str, request: Request, state: State) -> Response:
    """One trace: drawn as a page, or as JSON when the name ends in .json (that one needs the key as the API does)."""
    as_json = name.endswith(".json")
    trace_id = name[: -len(".json")] if as_json else name
    if as_json:
        require_key(request, state)
    else:
        denied = page_auth(request, state)
        if denied is not None:
            return denied
    trace = await asyncio.to_thread(state.store.get, trace_id) if _TRACE_ID.match(trace_id) else None
    if trace is None:
        if as_json:
            raise ApiError(404, f"no trace {trace_id!r} on this server", "invalid_request_error", "trace_not_found")
        from ..web import render_message_page

        return HTMLResponse(render_message_page("No such trace", f"There is no trace {trace_id!r} on this server."), status_code=404)
    if as_json:
        return JSONResponse(trace)
    from ..web import render_trace_page

    return HTMLResponse(render_trace_page(trace, json_url=f"/traces/{quote(trace['id'])}.json", back_url="/traces"))


def model_obj(state: ServerState, name: str) -> dict[str, Any]:
    """One pipeline as an OpenAI model object, with what it runs under "smoa"."""
    return {"id": name, "object": "model", "created": state.started, "owned_by": "smoa", "smoa": state.pipelines.info[name]}


async def _unless_gone(aw: Any, gone: asyncio.Future[None]) -> bool:
    """Await `aw` unless the client leaves first (then cancel it and return False)."""
    task = asyncio.ensure_future(aw)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what it raised (a 429)
        return True
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, ApiError):
        pass
    return False


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (declared or sent)."""
    too_big = ApiError(413, f"the request body is over the limit of {limit} bytes", "invalid_request_error", "request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_big
        except ValueError:
            raise ApiError(400, "bad Content-Length header") from None
    parts: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise too_big
        parts.append(piece)
    return b"".join(parts)
