"""The FastAPI app: OpenAI-compatible routes, the trace viewer, auth and limits.

    GET  /v1/models                  the pipelines (presets and the config's), as models
    POST /v1/chat/completions        run one; streamed with "stream": true
    GET  /traces                     recent queries (HTML); /traces.json for scripts
    GET  /traces/{id}                one query drawn as a graph; /traces/{id}.json the raw trace
    GET  /health                     {"status": "ok"}
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.base import Backend
from ..config import ConfigFile, Pipeline, pipeline_names, resolve
from ..trace import Trace
from ..tracestore import MemoryStore, Store, TraceStore, default_path
from ..types import ConfigError
from .chat import build_pipeline_for, complete, parse_request, start_stream
from .errors import ApiError
from .settings import ServerOptions

log = logging.getLogger("smoa.server")

_TRACE_ID = re.compile(r"^[0-9a-f]{6,64}$")
KEY_COOKIE = "smoa_key"


class Pipelines:
    """The models this server offers. Built once at start-up to validate them and share backends."""

    def __init__(self, cfg: ConfigFile | None, instances: dict[str, Backend] | None = None) -> None:
        self.cfg = cfg
        self.given: dict[str, Backend] = dict(instances or {})  # the caller's, used as given
        # raw backends made from the config, shared by every pipeline and request; each agent
        # wraps them in its own retry/fallback policy (a wrapped one here would leak an agent's
        # fallback to every other agent on that backend)
        self.pool: dict[str, Backend] = {}
        self.available: list[str] = []
        self.broken: dict[str, str] = {}
        self.info: dict[str, dict[str, Any]] = {}
        for name in pipeline_names(cfg):
            try:
                p = resolve(cfg, pipeline=name, instances=self.given, pool=self.pool)
            except ConfigError as e:
                self.broken[name] = str(e)
                continue
            self.available.append(name)
            spec = cfg.pipelines.get(name) if cfg is not None else None
            self.info[name] = {
                "method": p.method, "n": p.n, "k": p.k, "max_rounds": p.max_rounds, "policy": p.policy.describe(),
                "description": (spec.description if spec is not None else "") or f"built-in {p.method} on the embedded model",
                "proposers": [f"{a.backend_name}:{a.model}" for a in p.proposers],
                "aggregator": f"{p.aggregator.backend_name}:{p.aggregator.model}",
            }

    @property
    def instances(self) -> dict[str, Backend]:
        """Every backend object the server holds (given and made), by name."""
        return {**self.pool, **self.given}

    def build(self, name: str, **overrides: Any) -> Pipeline:
        return resolve(self.cfg, pipeline=name, instances=self.given, pool=self.pool, **overrides)


class ServerState:
    def __init__(self, pipelines: Pipelines, options: ServerOptions, store: Store) -> None:
        self.pipelines = pipelines
        self.options = options
        self.store = store
        self.in_flight = 0
        self.started = int(time.time())

    def try_acquire(self) -> bool:
        if self.in_flight >= self.options.max_in_flight:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    async def save_trace(self, trace: Trace) -> None:
        try:
            await asyncio.to_thread(self.store.save, trace.to_dict(), "server")
        except Exception as e:  # a full disk must not fail the query
            log.warning("could not save trace %s: %s", trace.id, e)


def make_store(options: ServerOptions) -> Store:
    if not options.save_traces:
        return MemoryStore()
    return TraceStore(options.trace_store or default_path())


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(
    config: ConfigFile | None = None,
    options: ServerOptions | None = None,
    instances: dict[str, Backend] | None = None,
    store: Store | None = None,
    warm_up: bool = True,
) -> FastAPI:
    """The ASGI app. `instances` maps backend names to ready objects (tests use ScriptedBackend)."""
    options = options or ServerOptions()
    pipelines = Pipelines(config, instances)
    for name, why in pipelines.broken.items():
        log.warning("pipeline %r is not offered: %s", name, why)
    state = ServerState(pipelines, options, store if store is not None else make_store(options))

    async def lifespan(app: FastAPI):
        tasks = []
        if warm_up:
            for b in pipelines.instances.values():
                if b.kind == "local":  # load the embedded model now, not on the first query
                    tasks.append(asyncio.create_task(asyncio.to_thread(_warm, b)))
        yield
        for t in tasks:
            t.cancel()
        for b in pipelines.instances.values():
            try:
                await b.aclose()
            except Exception:  # closing is best effort
                pass

    app = FastAPI(title="smoa", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.smoa = state

    def authorized(request: Request) -> bool:
        key = options.api_key
        if not key:
            return True
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(KEY_COOKIE, "")
        return bool(given) and hmac.compare_digest(given.encode(), key.encode())

    def need_auth(request: Request) -> None:
        if not authorized(request):
            raise ApiError(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>' (the server's SMOA_API_KEY)",
                "authentication_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else ("method_not_allowed" if exc.status_code == 405 else None)
        msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error_response(ApiError(exc.status_code, msg, "invalid_request_error", kind))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "in_flight": state.in_flight, "models": len(pipelines.available)}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        need_auth(request)
        return {"object": "list", "data": [_model_obj(state, n) for n in pipelines.available]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str, request: Request) -> dict[str, Any]:
        need_auth(request)
        if name not in pipelines.available:
            raise ApiError(404, f"model {name!r} does not exist", "invalid_request_error", "model_not_found", "model")
        return _model_obj(state, name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        need_auth(request)
        body = await _read_body(request, options.max_request_bytes)
        req = parse_request(body)
        pipe = build_pipeline_for(state, req)
        from .chat import to_messages

        messages = to_messages(req.messages)
        if not state.try_acquire():
            raise ApiError(
                429, f"too many queries in flight (limit {options.max_in_flight}): retry shortly",
                "rate_limit_error", "rate_limit_exceeded", headers={"Retry-After": "1"},
            )
        # from here the slot belongs to the query's task, which frees it when it ends
        base = str(request.base_url).rstrip("/")
        if not req.stream:
            _, payload, headers = await complete(state, req, pipe, messages, base)
            return JSONResponse(payload, headers=headers)
        body_iter, headers = await start_stream(state, req, pipe, messages, base)
        return StreamingResponse(
            body_iter, media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- traces -------------------------------------------------------------
    def page_auth(request: Request) -> Response | None:
        """Pages accept the key as a bearer header, a cookie, or once as ?key= (which sets the cookie)."""
        key = request.query_params.get("key")
        if key is not None and options.api_key and hmac.compare_digest(key.encode(), options.api_key.encode()):
            target = request.url.path
            resp = RedirectResponse(target, status_code=303)
            resp.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
            return resp
        if not authorized(request):
            from ..web import render_message_page

            return HTMLResponse(
                render_message_page("API key needed", "This server needs its API key: open this page once with ?key=YOUR_KEY."),
                status_code=401,
            )
        return None

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/traces")

    @app.get("/traces.json")
    async def traces_json(request: Request, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        need_auth(request)
        limit = max(1, min(limit, 500))
        rows = await asyncio.to_thread(state.store.recent, limit, offset)
        return {"object": "list", "data": rows, "store": state.store.describe()}

    @app.get("/traces")
    async def traces_page(request: Request, limit: int = 50, offset: int = 0) -> Response:
        denied = page_auth(request)
        if denied is not None:
            return denied
        from ..web import render_list_page

        limit = max(1, min(limit, 500))
        rows = await asyncio.to_thread(state.store.recent, limit, offset)
        total = await asyncio.to_thread(state.store.count)
        return HTMLResponse(render_list_page(rows, total=total, limit=limit, offset=offset, store=state.store.describe()))

    @app.get("/traces/{name}")
    async def trace_page(name: str, request: Request) -> Response:
        as_json = name.endswith(".json")
        trace_id = name[: -len(".json")] if as_json else name
        if as_json:
            need_auth(request)
        else:
            denied = page_auth(request)
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

    return app


def _warm(b: Backend) -> None:
    try:
        _ = b.model  # type: ignore[attr-defined]  # LocalBackend loads on first access
    except Exception as e:
        log.warning("could not load the embedded model: %s", e)


def _model_obj(state: ServerState, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": state.started, "owned_by": "smoa", "smoa": state.pipelines.info[name]}


async def _read_body(request: Request, limit: int) -> bytes:
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
