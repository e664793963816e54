"""The FastAPI app: OpenAI-compatible routes, the trace viewer, auth and limits.

    GET  /v1/models                  the pipelines (presets and the config's), as models
    POST /v1/chat/completions        run one; streamed with "stream": true
    GET  /traces                     recent queries (HTML); /traces.json for scripts
    GET  /traces/{id}                one query drawn as a graph; /traces/{id}.json the raw trace
    GET  /health                     {"status": "ok"}

`create_app` only wires things together: the state (state.py), the lifespan, CORS, the error
handlers and the routers (routes.py, whose handlers are plain functions).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.base import Backend
from ..config import ConfigFile
from ..tracestore import Store
from . import routes
from .errors import ApiError, bad_request, error_response
from .settings import ServerOptions
from .state import Pipelines, ServerState, make_store

log = logging.getLogger("smoa.server")


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
    state = ServerState(pipelines, options, store if store is not None else make_store(options), warm_up)

    app = FastAPI(
        title="smoa", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
        exception_handlers={ApiError: api_error, RequestValidationError: query_error, StarletteHTTPException: http_error},
    )
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
    app.include_router(routes.api)
    app.include_router(routes.pages)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start-up: load embedded models. Shutdown: stop their decodes (`smoa serve` only), close backends."""
    state: ServerState = app.state.smoa
    tasks = []
    if state.warm_up:
        for b in state.pipelines.instances.values():
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
    for b in state.pipelines.instances.values():  # those made since start-up too
        try:
            await b.aclose()
        except Exception:  # closing is best effort
            pass


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc)


async def query_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A bad query or path parameter: 400 in the OpenAI shape, naming the parameter."""
    err = exc.errors()[0]
    name = str(err["loc"][-1]) if err.get("loc") else "request"
    return error_response(bad_request(f"{name}: {err.get('msg', 'invalid value')}", name))


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in the OpenAI shape."""
    kind = "not_found" if exc.status_code == 404 else ("method_not_allowed" if exc.status_code == 405 else None)
    msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
    return error_response(ApiError(exc.status_code, msg, "invalid_request_error", kind))


def _warm(b: Backend) -> None:
    try:
        _ = b.model  # type: ignore[attr-defined]  # LocalBackend loads on first access
    except Exception as e:
        log.warning("could not load the embedded model: %s", e)
