"""`smoa serve` as a real subprocess over a real OpenAI-compatible upstream (smoa.fakeserver),
both on 127.0.0.1, driven by the openai SDK and raw HTTP (issue 12)."""

import concurrent.futures as cf
import json

import httpx
import openai
import pytest

from smoa.testing import ServerProcess

pytestmark = pytest.mark.server
pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")

CONFIG = """
[backends.up]
type = "openai"
base_url = "{upstream}"
max_retries = 0

[pipelines.mix]
method = "moa"
n = 2
max_rounds = 1
agent = {{ backend = "up", model = "fake-a" }}

[pipelines.one]
method = "single"
agent = {{ backend = "up", model = "fake-b" }}
"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("upstream")
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}", "--latency", "0.1"]) as up:
        cfg = d / "smoa.toml"
        cfg.write_text(CONFIG.format(upstream=up.base_url))
        env = {"SMOA_CACHE_DIR": str(d / "cache"), "SMOA_TRACE_STORE": str(d / "traces.sqlite")}
        argv = ["python", "-m", "smoa", "serve", "--config", str(cfg), "--port", "{port}", "--max-in-flight", "2",
                "--cors-origin", "https://app.example", "--log-level", "warning"]
        with ServerProcess(argv, ready_path="/health", env=env, timeout_s=60) as srv:
            try:
                yield srv, up
            finally:
                while _CLIENTS:  # the sockets of the tests' clients close with the servers
                    _CLIENTS.popitem()[1].close()
        assert "Traceback" not in srv.log(), srv.log()[-3000:]


_CLIENTS: dict[str, openai.OpenAI] = {}


def client(srv):
    """One OpenAI client per server for the module, closed by the `servers` fixture."""
    if srv.base_url not in _CLIENTS:
        _CLIENTS[srv.base_url] = openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=60)
    return _CLIENTS[srv.base_url]


def test_sixteen_concurrent_requests_against_two_slots(servers):
    srv, up = servers
    c = client(srv)

    def ask(i):
        return c.chat.completions.create(model="mix", messages=[{"role": "user", "content": f"question {i}"}])

    with cf.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    assert all(a.choices[0].message.content for a in answers)
    # two queries at a time, each with two proposers: never more than four upstream calls at once
    assert httpx.get(f"{up.root_url}/stats").json()["peak_in_flight"] <= 4


def test_sampling_fields_reach_the_upstream(servers):
    srv, up = servers
    client(srv).chat.completions.create(
        model="one", messages=[{"role": "user", "content": "hi"}], top_p=0.7, presence_penalty=0.5,
        frequency_penalty=-0.25, stop=["END"], max_tokens=33,
    )
    seen = httpx.get(f"{up.root_url}/stats").json()["seen"]
    assert (seen["top_p"], seen["presence_penalty"], seen["frequency_penalty"]) == (0.7, 0.5, -0.25)
    assert seen["stop"] == ["END"] and seen["max_tokens"] == 33


def test_stop_streamed_and_not(servers):
    srv, _ = servers
    # the fake upstream ignores stop (as some servers do); its answer is "Proposal from fake-b ..."
    whole = client(srv).chat.completions.create(model="one", messages=[{"role": "user", "content": "hi"}], stop=[" fake"])
    assert whole.choices[0].message.content == "Proposal from"
    parts = [ch.choices[0].delta.content or "" for ch in client(srv).chat.completions.create(
        model="one", messages=[{"role": "user", "content": "hi"}], stop=[" fake"], stream=True) if ch.choices]
    assert "".join(parts) == "Proposal from"


def test_structured_output_through_the_openai_backend(servers):
    from pydantic import BaseModel

    class Answer(BaseModel):
        city: str
        score: int

    srv, _ = servers
    got = client(srv).chat.completions.parse(model="mix", messages=[{"role": "user", "content": "city?"}], response_format=Answer)
    assert got.choices[0].message.parsed == Answer(city="fake", score=1)


def test_tool_loop_through_the_openai_backend(servers):
    srv, _ = servers
    c = client(srv)
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    first = c.chat.completions.create(model="mix", messages=msgs, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "fake"}
    msgs += [first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}]
    final = c.chat.completions.create(model="mix", messages=msgs, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content == "fake"
    # the writer used the upstream's native tool calling
    seen = httpx.get(f"{servers[1].root_url}/stats").json()["seen"]
    assert seen["tools"][0]["function"]["name"] == "get_weather" and seen["tool_choice"] == "auto"


def test_native_tool_calling_steps_down_to_the_json_schema():
    """An endpoint that refuses `tools` is asked for the decision's JSON schema, for good."""
    import asyncio

    from smoa.backends.openai_backend import OpenAIBackend
    from smoa.server.tools import parse_tools
    from smoa.types import Request

    plan = parse_tools([WEATHER], "required", None)
    fmt = plan.answer_format()
    tools, choice = plan.native()
    req = Request(messages=({"role": "user", "content": "Weather in Paris?"},), model="m", json_schema=fmt.schema,
                  tools=tools, tool_choice=choice)
    for reject, native_after in ((False, True), (True, False)):
        argv = ["python", "-m", "smoa.fakeserver", "--port", "{port}", *(["--reject-tools"] if reject else [])]
        with ServerProcess(argv) as up:
            be = OpenAIBackend(base_url=up.base_url, max_retries=0)
            comp = asyncio.run(be.complete(req))
            value, why = fmt.check(comp.text)
            assert why is None and value["tool_calls"][0] == {"name": "get_weather", "arguments": {"city": "fake"}}
            assert be.native_tools is native_after


def test_cors_preflight(servers):
    srv, _ = servers
    r = httpx.options(f"{srv.base_url}/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"


def test_models_describe_the_upstream(servers):
    srv, up = servers
    mix = next(m for m in client(srv).models.list().data if m.id == "mix")
    assert up.base_url in mix.smoa["description"] and "fake-a" in mix.smoa["description"]


def test_single_writer_asks_the_upstream_for_the_schema(servers):
    srv, _ = servers
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for stream in (False, True):
        raw = client(srv).chat.completions.with_raw_response.create(
            model="one", messages=[{"role": "user", "content": "a number?"}], stream=stream,
            response_format={"type": "json_schema", "json_schema": {"name": "num", "schema": schema}},
        )
        text = raw.parse().choices[0].message.content if not stream else "".join(
            c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert json.loads(text) == {"n": 1}
        tr = httpx.get(f"{srv.root_url}/traces/{raw.headers['x-smoa-trace-id']}.json").json()
        assert [c["stage"] for c in tr["calls"]] == ["propose"]  # the first answer fit: no repair
