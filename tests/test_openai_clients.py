"""The openai backend's two HTTP clients (aiohttp and openai-sdk) behave the same, against
real servers on 127.0.0.1 (smoa.fakeserver): answers, streams, errors, step-down.
The aiohttp client alone, against hand-written HTTP: test_http_transport.py, test_http_sse.py,
test_http_tls_proxy.py."""

import asyncio

import pytest
from rawhttp import no_leaks

from smoa import BackendError, ConfigError, resolve
from smoa.backends.openai_backend import OpenAIBackend
from smoa.config import ConfigFile, load_config
from smoa.engine import Engine
from smoa.testing import ServerProcess, free_port
from smoa.types import InputError, Request, Settings

pytestmark = pytest.mark.server
CLIENTS = ("aiohttp", "openai-sdk")


@pytest.fixture(scope="module")
def fake():
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as srv:
        yield srv


def _faulty(kind, *extra):
    return ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--fault-rate", "1",
                          "--faults", kind, "--hang", "5", "--retry-after", "0.25", *extra])


def req(schema=None, **settings):
    return Request(messages=({"role": "user", "content": "What is 2+2? Ünïcode ✓"},), model="m1",
                   settings=Settings(**settings), json_schema=schema)


def complete(be, request):
    async def go():
        try:
            return await be.complete(request)
        finally:
            await be.aclose()
    return asyncio.run(go())


def stream(be, request):
    async def go():
        out = []
        try:
            async for ev in be.stream(request):
                out.append(ev)
        finally:
            await be.aclose()
        return out
    return asyncio.run(go())


@pytest.mark.parametrize("client", CLIENTS)
def test_one_backend_across_event_loops_closes_each_loops_connections(fake, client):
    # each asyncio.run gets its own connections, closed with its loop without an aclose():
    # the openai-sdk client once kept one client for all loops, and its connections on
    # finished loops were left for the garbage collector (3 unclosed transports, issue 17)
    async def both(be):
        got = await be.complete(req())
        events = [ev async for ev in be.stream(req())]
        return got, events

    def queries():  # the backend is garbage when this returns
        be = OpenAIBackend(base_url=fake.base_url, http_client=client, max_retries=0, name="fake")
        for _ in range(3):
            got, events = asyncio.run(both(be))
            assert got.text and events[-1].completion is not None

    with no_leaks():
        queries()


@pytest.mark.parametrize("client", CLIENTS)
def test_smoa_end_to_end_with_each_client(fake, client):
    cfg = ConfigFile(
        backends={"fake": {"type": "openai", "base_url": fake.base_url, "http_client": client, "retries": 0}},
        pipelines={"p": {"method": "smoa", "agent": {"backend": "fake", "model": "m1"}}},
    )
    pipe = resolve(cfg, n=3, k=2, max_rounds=2, seed=3)
    r = asyncio.run(Engine(pipe).run("What is 1+1?"))
    assert [c.stage for c in r.trace.calls].count("propose") == 6
    assert r.trace.layers[0]["judge"]["fallback"] is None  # the JSON verdict was read
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in r.trace.calls)


def test_both_clients_give_the_same_completion(fake):
    got = {c: complete(OpenAIBackend(base_url=fake.base_url, http_client=c), req(seed=5, temperature=0.0, max_tokens=9))
           for c in CLIENTS}
    a, b = got["aiohttp"], got["openai-sdk"]
    assert (a.text, a.prompt_tokens, a.completion_tokens, a.model, a.finish_reason) == (
        b.text, b.prompt_tokens, b.completion_tokens, b.model, b.finish_reason)
    assert a.text and a.finish_reason == "stop"


@pytest.mark.parametrize("client", CLIENTS)
def test_stream_deltas_add_up_to_the_completion(fake, client):
    evs = stream(OpenAIBackend(base_url=fake.base_url, http_client=client), req())
    deltas = [e.delta for e in evs if e.delta]
    final = evs[-1].completion
    assert len(deltas) > 1 and "".join(deltas) == final.text
    assert final.completion_tokens > 0 and final.finish_reason == "stop"


@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_endpoint(client):
    be = OpenAIBackend(base_url=f"http://127.0.0.1:{free_port()}/v1", http_client=client, max_retries=0)
    with pytest.raises(BackendError, match="cannot reach the endpoint") as ei:
        complete(be, req())
    assert ei.value.retryable is True and ei.value.status_code is None


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(("fault", "match", "expected"), [
    ("500", "the endpoint answered 500", {"status_code": 500}),  # a server error carries its status
    ("429", None, {"status_code": 429, "retry_after": pytest.approx(0.25)}),  # a rate limit, its Retry-After
    ("malformed", "malformed response", {"retryable": True}),  # a body that is not JSON: retryable
])
def test_faults_become_errors_with_their_details(client, fault, match, expected):
    with _faulty(fault) as srv:
        with pytest.raises(BackendError, match=match) as ei:
            complete(OpenAIBackend(base_url=srv.base_url, http_client=client, max_retries=0), req())
    assert {k: getattr(ei.value, k) for k in expected} == expected


@pytest.mark.parametrize("client", CLIENTS)
def test_hanging_endpoint_times_out(client):
    with _faulty("timeout") as srv:
        be = OpenAIBackend(base_url=srv.base_url, http_client=client, max_retries=0, timeout_s=0.5)
        with pytest.raises(BackendError, match="no reply in time") as ei:
            complete(be, req())
    assert ei.value.timeout is True and ei.value.retryable is True


@pytest.mark.parametrize("client", CLIENTS)
def test_truncated_stream_is_reported(client):
    with _faulty("truncate") as srv:
        be = OpenAIBackend(base_url=srv.base_url, http_client=client, max_retries=0)
        with pytest.raises(BackendError, match="stream ended early") as ei:
            stream(be, req())
    assert ei.value.retryable is True


@pytest.mark.parametrize("client", CLIENTS)
def test_api_key_is_sent_and_a_wrong_one_is_named(client):
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--api-key", "s3cret-key-42"]) as srv:
        ok = complete(OpenAIBackend(base_url=srv.base_url, http_client=client, api_key="s3cret-key-42"), req())
        assert ok.text
        with pytest.raises(BackendError, match=r"refused the API key \(401\)") as ei:
            complete(OpenAIBackend(base_url=srv.base_url, http_client=client, api_key="wrong-key-99", max_retries=0), req())
    assert ei.value.status_code == 401 and "wrong-key-99" not in str(ei.value)


@pytest.mark.parametrize("client", CLIENTS)
def test_structured_output_steps_down_when_refused(client):
    schema = {"type": "object", "properties": {"keep": {"type": "array", "items": {"type": "integer"}}}}
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--reject-json-schema"]) as srv:
        be = OpenAIBackend(base_url=srv.base_url, http_client=client, max_retries=0)
        out = complete(be, req(schema=schema))
    assert out.text and be.structured == "json_object"  # stepped down once, for good


@pytest.mark.parametrize("client", CLIENTS)
def test_context_window_refusal_is_input_error(client):
    be = OpenAIBackend(base_url="http://127.0.0.1:9/v1", http_client=client, context_window=16)
    long = Request(messages=({"role": "user", "content": "word " * 200},), model="m1", settings=Settings())
    with pytest.raises(InputError, match="over the context window"):
        complete(be, long)


def test_aiohttp_is_the_default_and_the_former_names_are_deprecated_aliases(tmp_path):
    assert OpenAIBackend(base_url="http://127.0.0.1:8000/v1").http_client == "aiohttp"
    for old in ("builtin", "auto"):
        with pytest.warns(FutureWarning, match=rf"backend 'b': http_client = '{old}' is deprecated.*aiohttp"):
            assert OpenAIBackend(base_url="http://127.0.0.1:8000/v1", name="b", http_client=old).http_client == "aiohttp"
    toml = tmp_path / "smoa.toml"
    toml.write_text('[backends.b]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\nhttp_client = "builtin"\n'
                    '[pipelines.p]\nmethod = "single"\nagent = { backend = "b", model = "m" }\n')
    with pytest.warns(FutureWarning, match="deprecated"):
        pipe = resolve(load_config(toml))
    assert pipe.proposers[0].backend.inner.http_client == "aiohttp"


def test_bad_http_client_and_url_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="http_client must be one of aiohttp, openai-sdk, not 'curl'"):
        OpenAIBackend(base_url="http://127.0.0.1:1/v1", http_client="curl")
    with pytest.raises(ConfigError, match="not an http"):
        OpenAIBackend(base_url="127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="not usable in an HTTP header"):
        OpenAIBackend(base_url="http://127.0.0.1:1/v1", api_key="sk-line\nbreak")
    toml = tmp_path / "smoa.toml"
    toml.write_text('[backends.b]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\nhttp_client = "curl"\n'
                    '[pipelines.p]\nmethod = "single"\nagent = { backend = "b", model = "m" }\n')
    with pytest.raises(ConfigError, match=r"backends\.b\.http_client: unknown HTTP client 'curl': use aiohttp"):
        load_config(toml)
