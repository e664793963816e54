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

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
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
from .admission import Admission, wait_disconnect
from .chat import build_pipeline_for, complete, start_stream
from .errors import ApiError, bad_request
from .request import parse_request, to_messages
from .settings import ServerOptions

log = logging.getLogger("smoa.server")

_TRACE_ID = re.compile(r"^[0-9a-f]{6,64}$")
KEY_COOKIE = "smoa_key"
MAX_OFFSET = 2**53  # SQLite takes 64-bit offsets; far larger ones are typing mistakes


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
            stages = stages_of(p)
            self.info[name] = {
                "method": p.method, "n": p.n, "k": p.k, "max_rounds": p.max_rounds, "policy": p.policy.describe(),
                "description": (spec.description if spec is not None else "") or describe_pipeline(p, stages),
                "stages": stages,
                "proposers": [f"{a.backend_name}:{a.model}" for a in p.proposers],
                "aggregator": f"{p.aggregator.backend_name}:{p.aggregator.model}",
            }

    @property
    def instances(self) -> dict[str, Backend]:
        """Every backend object the server holds (given and made), by name."""
        return {**self.pool, **self.given}

    def build(self, name: str, **overrides: Any) -> Pipeline:
        return resolve(self.cfg, pipeline=name, instances=self.given, pool=self.pool, **overrides)


def _runs_on(a: Any) -> str:
    """'<backend name> (<kind>: <where>) model <model>': what one agent really calls."""
    from ..redaction import redact

    return redact(f"{a.backend_name} ({a.backend.describe()}) model {a.model}")


def stages_of(p: Pipeline) -> dict[str, Any]:
    """The stages this pipeline's policy uses, each with the backend and model it runs on."""
    from ..policy import Finish, Forward, Stop

    policy = p.policy
    out: dict[str, Any] = {"proposers": sorted({_runs_on(a) for a in p.proposers})}
    if policy.uses_roles and p.roles is None and any(a.role is None for a in p.proposers):
        out["role_generator"] = _runs_on(p.role_generator)
    if policy.forward is Forward.JUDGE:
        out["judge"] = _runs_on(p.judge)
    if Stop.MODERATOR in policy.stop or (Stop.VERDICT in policy.stop and policy.forward is not Forward.JUDGE):
        out["moderator"] = _runs_on(p.moderator)
    if policy.finish in (Finish.AGGREGATE, Finish.VOTE):
        out["aggregator"] = _runs_on(p.aggregator)
    return out


def describe_pipeline(p: Pipeline, stages: dict[str, Any]) -> str:
    if p.policy.one_shot:
        shape = "one call"
    elif p.policy.sparse:
        shape = f"{p.n} proposers, judge keeps {p.k}, up to {p.max_rounds} rounds"
    else:
        shape = f"{p.n} proposers, {p.max_rounds} round(s)"
    parts = [f"{stage}: {', '.join(v) if isinstance(v, list) else v}" for stage, v in stages.items()]
    return f"{p.method} ({shape}); " + "; ".join(parts)


class ServerState:
    def __init__(self, pipelines: Pipelines, options: ServerOptions, store: Store) -> None:
        self.pipelines = pipelines
        self.options = options
        self.store = store
        self.admission = Admission(options.max_in_flight, options.max_queue, options.queue_timeout_s)
        self.started = int(time.time())

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def release(self, duration_s: float | None = None) -> None:
        self.admission.release(duration_s)

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
        # shutting down (uvicorn has waited its grace period and cancelled what still ran):
        # embedded-model decodes stop at their next token instead of running to max_tokens.
        # Only a server process does this (`smoa serve`): ABORT is process-wide, and an app
        # embedded in another program (or a test) must not stop that program's decodes.
        if getattr(app.state, "abort_decodes_on_shutdown", False):
            from ..backends.batching import ABORT

            ABORT.set()
        for t in tasks:
            t.cancel()
        for b in pipelines.instances.values():
            try:
                await b.aclose()
            except Exception:  # closing is best effort
                pass

    app = FastAPI(title="smoa", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.smoa = state
    if options.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        from .chat import TRACE_HEADER, TRACE_URL_HEADER

        # preflights are answered by the middleware; the API key travels as a header, so no
        # cookies ("credentials") are allowed cross-origin
        app.add_middleware(
            CORSMiddleware, allow_origins=list(options.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["*"], expose_headers=[TRACE_HEADER, TRACE_URL_HEADER, "Retry-After"], max_age=600,
        )

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

    @app.exception_handler(RequestValidationError)
    async def _query_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        name = str(err["loc"][-1]) if err.get("loc") else "request"
        return _error_response(bad_request(f"{name}: {err.get('msg', 'invalid value')}", name))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else ("method_not_allowed" if exc.status_code == 405 else None)
        msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error_response(ApiError(exc.status_code, msg, "invalid_request_error", kind))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "in_flight": state.in_flight, "queued": state.admission.queued, "models": len(pipelines.available)}

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
        messages = to_messages(req.messages)
        gone = asyncio.ensure_future(wait_disconnect(request.receive))  # a client that leaves frees its place
        try:
            if not await _unless_gone(state.admission.acquire(), gone):
                return Response(status_code=499)  # nobody is listening any more
            # from here the slot belongs to the query's task, which frees it when it ends
            base = str(request.base_url).rstrip("/")
            if not req.stream:
                try:
                    got = await complete(state, req, pipe, messages, base, gone)
                except asyncio.CancelledError:
                    # only the server cancels a handler: it is shutting down past its grace
                    # period (the query was cancelled and its partial trace saved)
                    return JSONResponse(
                        {"error": {"message": "the server is shutting down: the query was cancelled; retry it",
                                   "type": "server_shutting_down", "param": None, "code": "server_shutting_down"}},
                        status_code=503, headers={"Retry-After": "1"},
                    )
                if got is None:
                    return Response(status_code=499)
                return JSONResponse(got[1], headers=got[2])
            started = await start_stream(state, req, pipe, messages, base, gone)
            if started is None:
                return Response(status_code=499)
            body_iter, headers = started
        finally:
            gone.cancel()  # the streaming response watches the connection itself from here
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
    async def traces_json(request: Request, limit: int = Query(50, ge=1, le=MAX_OFFSET), offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict[str, Any]:
        need_auth(request)
        limit = max(1, min(limit, 500))
        rows = await asyncio.to_thread(state.store.recent, limit, offset)
        return {"object": "list", "data": rows, "store": state.store.describe()}

    @app.get("/traces")
    async def traces_page(request: Request, limit: int = Query(50, ge=1, le=MAX_OFFSET), offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> Response:
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
