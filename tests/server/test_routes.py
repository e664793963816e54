"""The route handlers alone: plain functions called with a ServerState, no app and no sockets;
and every route wired through the app."""

import asyncio

import pytest
from starlette.requests import Request

from smoa.server import create_app, routes
from smoa.server.errors import ApiError
from smoa.server.settings import ServerOptions
from smoa.server.state import Pipelines, ServerState
from smoa.testing import ScriptedBackend
from smoa.tracestore import MemoryStore


def make_state(**options):
    pipelines = Pipelines(None, {"local": ScriptedBackend()})
    return ServerState(pipelines, ServerOptions(**options), MemoryStore(), warm_up=False)


def request(path="/", headers=None, query=""):
    scope = {
        "type": "http", "method": "GET", "path": path, "query_string": query.encode(), "scheme": "http",
        "server": ("127.0.0.1", 8000), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope)


def test_health_and_models_from_the_state_alone():
    state = make_state()
    h = asyncio.run(routes.health(state))
    assert h == {"status": "ok", "in_flight": 0, "queued": 0, "models": len(state.pipelines.available)}
    listed = asyncio.run(routes.list_models(state))
    assert [m["id"] for m in listed["data"]] == state.pipelines.available
    assert asyncio.run(routes.get_model("smoa", state))["smoa"]["method"] == "smoa"
    with pytest.raises(ApiError) as info:
        asyncio.run(routes.get_model("nope", state))
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_the_key_dependency_and_the_pages_key():
    state = make_state(api_key="s3cret-key")
    with pytest.raises(ApiError) as info:
        routes.require_key(request(), state)
    assert info.value.status == 401 and info.value.headers == {"WWW-Authenticate": "Bearer"}
    with pytest.raises(ApiError):
        routes.require_key(request(headers={"Authorization": "Bearer wrong"}), state)
    routes.require_key(request(headers={"Authorization": "Bearer s3cret-key"}), state)
    routes.require_key(request(headers={"Cookie": f"{routes.KEY_COOKIE}=s3cret-key"}), state)
    # a page: 401 without the key, a redirect that sets the cookie with ?key=, shown with the cookie
    assert routes.page_auth(request("/traces"), state).status_code == 401
    redirect = routes.page_auth(request("/traces", query="key=s3cret-key"), state)
    assert redirect.status_code == 303 and redirect.headers["location"] == "/traces"
    assert f"{routes.KEY_COOKIE}=s3cret-key" in redirect.headers["set-cookie"]
    assert routes.page_auth(request("/traces", headers={"Cookie": f"{routes.KEY_COOKIE}=s3cret-key"}), state) is None
    # no key on the server: everything is open
    routes.require_key(request(), make_state())
    assert routes.page_auth(request("/traces"), make_state()) is None


def test_trace_listing_and_one_trace_from_the_store():
    state = make_state()
    trace = {"id": "abc123def456", "created_at": 1.0, "query": [{"role": "user", "content": "q"}], "method": "single", "calls": [], "answer": "a"}
    state.store.save(trace, "server")
    listed = asyncio.run(routes.traces_json(state, limit=10, offset=0))
    assert [r["id"] for r in listed["data"]] == ["abc123def456"]
    got = asyncio.run(routes.trace_page("abc123def456.json", request(), state))
    assert got.status_code == 200 and b"abc123def456" in got.body
    with pytest.raises(ApiError) as info:
        asyncio.run(routes.trace_page("0000000000.json", request(), state))
    assert info.value.status == 404 and info.value.code == "trace_not_found"
    assert asyncio.run(routes.trace_page("not-an-id", request(), state)).status_code == 404


def test_the_app_wires_every_route():
    """Each route answers through the app (in process, no sockets), not with "no route"."""
    import httpx

    app = create_app(instances={"local": ScriptedBackend()}, store=MemoryStore(), warm_up=False)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return {
                "root": await c.get("/"),
                "health": await c.get("/health"),
                "models": await c.get("/v1/models"),
                "model": await c.get("/v1/models/nope"),
                "chat": await c.post("/v1/chat/completions", content=b"{}"),
                "chat_get": await c.get("/v1/chat/completions"),
                "traces": await c.get("/traces"),
                "traces_json": await c.get("/traces.json?limit=0"),
                "trace": await c.get("/traces/abc123def456.json"),
                "nothing": await c.get("/v2/nothing"),
            }

    r = asyncio.run(go())
    assert r["root"].status_code == 307 and r["root"].headers["location"] == "/traces"
    assert r["health"].json()["status"] == "ok"
    assert [m["id"] for m in r["models"].json()["data"]] == app.state.smoa.pipelines.available
    assert r["model"].status_code == 404 and r["model"].json()["error"]["code"] == "model_not_found"
    assert r["chat"].status_code == 400 and r["chat"].json()["error"]["type"] == "invalid_request_error"
    assert r["chat_get"].status_code == 405 and r["chat_get"].json()["error"]["code"] == "method_not_allowed"
    assert r["traces"].status_code == 200 and "text/html" in r["traces"].headers["content-type"]
    assert r["traces_json"].status_code == 400 and r["traces_json"].json()["error"]["param"] == "limit"
    assert r["trace"].status_code == 404 and r["trace"].json()["error"]["code"] == "trace_not_found"
    assert r["nothing"].status_code == 404 and r["nothing"].json()["error"]["message"] == "no route GET /v2/nothing"
