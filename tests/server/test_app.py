"""The server over real loopback sockets with scripted models, driven by the official SDK."""

import json
import threading
import time

import httpx
import openai
import pytest

from smoa.testing import ScriptedBackend, mixture_responder, stage_of
from smoa.types import BackendError

pytestmark = pytest.mark.server

WEB = httpx.Client(timeout=30)  # one client: a new one per request costs 0.2 s of TLS set-up

CONFIG = """
[pipelines.tiny]
method = "smoa"
n = 3
k = 2
max_rounds = 2
description = "three proposers, keep two"
"""


def client(srv, key="none"):
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0, timeout=30)


def trace_of(srv, trace_id, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = WEB.get(f"{srv.root}/traces/{trace_id}.json", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_models_lists_presets_and_config_pipelines(make_server):
    srv = make_server(config_text=CONFIG)
    models = client(srv).models.list()
    ids = [m.id for m in models.data]
    assert ids[:5] == ["single", "moa", "smoa", "mad", "self-moa"] and "tiny" in ids
    tiny = next(m for m in models.data if m.id == "tiny")
    assert tiny.owned_by == "smoa" and tiny.smoa["n"] == 3 and tiny.smoa["k"] == 2
    assert client(srv).models.retrieve("tiny").id == "tiny"


def test_completion_usage_matches_trace(make_server):
    srv = make_server(config_text=CONFIG)
    raw = client(srv).chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "What is 12 * 7?"}], seed=3
    )
    resp = raw.parse()
    trace_id = raw.headers["x-smoa-trace-id"]
    assert raw.headers["x-smoa-trace-url"].endswith(f"/traces/{trace_id}")
    assert resp.choices[0].message.content == "final answer"
    assert resp.choices[0].finish_reason == "stop"
    tr = trace_of(srv, trace_id)
    assert tr["id"] == trace_id and tr["pipeline"] == "tiny" and tr["answer"] == "final answer"
    total = tr["cost"]["total"]
    assert resp.usage.prompt_tokens == total["prompt_tokens"] == sum(c["prompt_tokens"] for c in tr["calls"])
    assert resp.usage.completion_tokens == total["completion_tokens"] == sum(c["completion_tokens"] for c in tr["calls"])
    assert resp.usage.total_tokens == total["total_tokens"]
    # every stage's tokens are in usage, not just the aggregator's
    agg = [c for c in tr["calls"] if c["stage"] == "aggregate"][0]
    assert resp.usage.total_tokens > agg["prompt_tokens"] + agg["completion_tokens"]
    assert resp.smoa["trace_id"] == trace_id and resp.smoa["method"] == "smoa"


def test_request_settings_reach_the_agents(make_server):
    srv = make_server()
    client(srv).chat.completions.create(
        model="moa", messages=[{"role": "user", "content": "hi"}], temperature=0.2, max_tokens=17,
        extra_body={"smoa": {"n": 2, "max_rounds": 1}},
    )
    calls = srv.backend.calls
    assert len(calls) == 3  # 2 proposers + aggregator
    assert all(c.settings.max_tokens == 17 and c.settings.temperature == 0.2 for c in calls)


@pytest.mark.parametrize("stream", [False, True])
def test_finish_reason_is_length_when_the_aggregator_was_cut(make_server, stream):
    from smoa.types import Completion

    base = mixture_responder()

    def respond(req):
        if stage_of(req) == "aggregate":
            return Completion(text="The answer", prompt_tokens=2, completion_tokens=2, model=req.model, finish_reason="length")
        return base(req)
    srv = make_server(backend=ScriptedBackend(responder=respond))
    kw = {"model": "moa", "messages": [{"role": "user", "content": "12*7?"}], "extra_body": {"smoa": {"n": 2, "max_rounds": 1}}}
    if stream:
        chunks = list(client(srv).chat.completions.create(stream=True, **kw))
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finals == ["length"]
    else:
        assert client(srv).chat.completions.create(**kw).choices[0].finish_reason == "length"


def test_streaming_sends_answer_in_chunks_with_usage(make_server):
    words = ["The ", "answer ", "is ", "84."]
    be = ScriptedBackend(responder=mixture_responder(aggregate="".join(words)))
    srv = make_server(backend=be)
    stream = client(srv).chat.completions.create(
        model="moa", messages=[{"role": "user", "content": "12*7?"}], stream=True,
        stream_options={"include_usage": True}, extra_body={"smoa": {"n": 2, "max_rounds": 1}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is 84."
    assert not any(getattr(c, "smoa_event", None) for c in chunks)  # progress only when asked
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    tr = trace_of(srv, chunks[0].id.removeprefix("chatcmpl-"))
    assert usage.total_tokens == tr["cost"]["total"]["total_tokens"]


def test_stream_progress_events_are_opt_in(make_server):
    srv = make_server()
    stream = client(srv).chat.completions.create(
        model="smoa", messages=[{"role": "user", "content": "12*7?"}], stream=True,
        extra_body={"smoa": {"n": 3, "k": 2, "max_rounds": 2, "events": True}},
    )
    chunks = list(stream)
    events = [c.smoa_event for c in chunks if getattr(c, "smoa_event", None)]
    kinds = {e["type"] for e in events}
    assert {"call_start", "call_end", "judge", "moderator"} <= kinds
    # an event chunk is a valid chunk with an empty delta: standard clients skip it
    assert all(c.choices and not c.choices[0].delta.content for c in chunks if getattr(c, "smoa_event", None))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "final answer"


def test_multi_turn_history_reaches_every_agent(make_server):
    srv = make_server(config_text=CONFIG)
    resp = client(srv).chat.completions.create(
        model="tiny",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "My name is Ada Lovelace."},
            {"role": "assistant", "content": "Nice to meet you, Ada."},
            {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
        ],
    )
    assert resp.choices[0].message.content
    calls = srv.backend.calls
    assert len(calls) >= 7
    for req in calls:
        if req.json_schema and "roles" in req.json_schema.get("properties", {}):
            continue  # role play runs before any query
        text = " ".join(m["content"] for m in req.messages)
        assert "Ada Lovelace" in text and "What is my name?" in text, req.messages


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"n": 2}, "n must be 1"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "last message"),
        ({"messages": []}, "messages is empty"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "image_url"),
        ({"extra_body": {"smoa": {"n": 3, "k": 3}}}, "must be smaller than n"),
        ({"extra_body": {"smoa": {"bogus": 1}}}, "smoa.bogus"),
        ({"temperature": 7}, "temperature"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]: only"),
    ],
)
def test_bad_requests_are_400_in_openai_shape(make_server, kwargs, needle):
    srv = make_server()
    args = {"model": "smoa", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client(srv).chat.completions.create(**args)
    assert e.value.status_code == 400
    assert needle in e.value.body["message"], e.value.body
    assert e.value.body["type"] == "invalid_request_error"


def test_malformed_json_is_400(make_server):
    srv = make_server()
    r = WEB.post(f"{srv.base_url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "the request body is not valid JSON"


def test_unknown_model_and_route_are_404(make_server):
    srv = make_server()
    with pytest.raises(openai.NotFoundError) as e:
        client(srv).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and "smoa" in e.value.body["message"]
    r = WEB.get(f"{srv.root}/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_too_large_is_413(make_server):
    srv = make_server(max_request_bytes=4096)
    with pytest.raises(openai.APIStatusError) as e:
        client(srv).chat.completions.create(model="smoa", messages=[{"role": "user", "content": "x" * 10_000}])
    assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"


def test_api_key_is_required_when_set(make_server):
    srv = make_server(api_key="sekret")
    with pytest.raises(openai.AuthenticationError):
        client(srv, key="wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(srv, key="wrong").chat.completions.create(model="single", messages=[{"role": "user", "content": "hi"}])
    assert client(srv, key="sekret").models.list().data
    raw = client(srv, key="sekret").chat.completions.with_raw_response.create(model="single", messages=[{"role": "user", "content": "hi"}])
    tid = raw.headers["x-smoa-trace-id"]
    assert WEB.get(f"{srv.root}/traces/{tid}.json").status_code == 401
    assert trace_of(srv, tid, key="sekret")["id"] == tid
    # pages: 401 without the key; ?key= once sets a cookie
    assert WEB.get(f"{srv.root}/traces").status_code == 401
    with httpx.Client(base_url=srv.root, follow_redirects=True) as web:
        r = web.get("/traces", params={"key": "sekret"})
        assert r.status_code == 200 and tid in r.text
        assert web.get(f"/traces/{tid}").status_code == 200
    assert WEB.get(f"{srv.root}/health").status_code == 200


def test_in_flight_limit_is_429_without_a_queue(make_server):
    be = ScriptedBackend(responder=mixture_responder(), latency_s=0.6)
    srv = make_server(backend=be, max_in_flight=1, max_queue=0)
    done = {}

    def slow():
        done["resp"] = client(srv).chat.completions.create(model="single", messages=[{"role": "user", "content": "hi"}])

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 5
    while WEB.get(f"{srv.root}/health").json()["in_flight"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as e:
        client(srv).chat.completions.create(model="single", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429 and e.value.response.headers["retry-after"]
    t.join()
    assert done["resp"].choices[0].message.content == "proposal"
    # the slot is free again
    assert client(srv).chat.completions.create(model="single", messages=[{"role": "user", "content": "hi"}]).choices


def _failing(message):
    def respond(req):
        raise BackendError(message)
    return respond


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failure_is_502_and_trace_is_kept(make_server, stream):
    srv = make_server(backend=ScriptedBackend(responder=_failing("openai:http://x: the endpoint answered 500: boom")))
    with pytest.raises(openai.APIStatusError) as e:
        r = client(srv).chat.completions.create(model="moa", messages=[{"role": "user", "content": "hi"}], stream=stream)
        list(r) if stream else None
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_error"
    assert "boom" in e.value.body["message"]
    tid = e.value.response.headers["x-smoa-trace-id"]
    tr = trace_of(srv, tid)
    assert tr["error"] and all(c["error"] for c in tr["calls"])


def _assert_504(make_server, respond):
    srv = make_server(backend=ScriptedBackend(responder=respond))
    with pytest.raises(openai.APIStatusError) as e:
        client(srv).chat.completions.create(model="single", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 504 and e.value.body["code"] == "upstream_timeout"


def test_upstream_timeout_is_504(make_server):
    def respond(req):  # what the openai backend and the timeout wrapper raise on a time-out
        raise BackendError("openai:http://x: no reply in time (APITimeoutError): the endpoint is slow or hanging", timeout=True)

    _assert_504(make_server, respond)


def test_bare_timeout_from_a_backend_is_504_too(make_server):
    def respond(req):  # a backend that lets a bare TimeoutError through
        raise TimeoutError("read timed out")

    _assert_504(make_server, respond)


def test_failure_after_stream_started_is_an_error_event(make_server):
    # proposers answer, the aggregator fails: with progress events on, the stream has begun
    def respond(req):
        if stage_of(req) == "aggregate":
            raise BackendError("aggregator exploded")
        return "fine"

    srv = make_server(backend=ScriptedBackend(responder=respond))
    stream = client(srv).chat.completions.create(
        model="moa", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_body={"smoa": {"n": 2, "max_rounds": 1, "events": True}},
    )
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert "aggregator exploded" in str(e.value)
    assert srv.app.state.smoa.in_flight == 0


def test_trace_pages(make_server):
    srv = make_server(config_text=CONFIG)
    raw = client(srv).chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "Is </script><b>bold</b> safe?"}]
    )
    tid = raw.headers["x-smoa-trace-id"]
    listing = WEB.get(f"{srv.root}/traces").text
    assert f'data-trace-id="{tid}"' in listing and "&lt;/script&gt;&lt;b&gt;bold" in listing
    rows = WEB.get(f"{srv.root}/traces.json").json()["data"]
    assert rows[0]["id"] == tid and rows[0]["method"] == "smoa" and rows[0]["total_tokens"] > 0
    page = WEB.get(f"{srv.root}/traces/{tid}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert html.count("</script>") == 2  # the data's and the viewer's own: the query cannot end a script
    data = html.split('<script id="trace-data" type="application/json">')[1].split("</script>")[0]
    assert json.loads(data)["id"] == tid
    for outside in ('src="http', 'href="http', "url(http", "@import", "<link"):  # nothing loaded from outside
        assert outside not in html
    assert WEB.get(f"{srv.root}/traces/{'0' * 32}").status_code == 404
    assert WEB.get(f"{srv.root}/traces/{'0' * 32}.json").json()["error"]["code"] == "trace_not_found"
    assert WEB.get(f"{srv.root}/", follow_redirects=False).headers["location"] == "/traces"


def test_stream_that_starts_before_the_first_token(make_server):
    # stream_hold_s = 0: the reply starts at once; the answer still arrives whole and in order
    be = ScriptedBackend(responder=mixture_responder(aggregate="late but whole"), latency_s=0.2)
    srv = make_server(backend=be, stream_hold_s=0.0)
    chunks = list(client(srv).chat.completions.create(
        model="moa", messages=[{"role": "user", "content": "hi"}], stream=True, extra_body={"smoa": {"n": 2, "max_rounds": 1}},
    ))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "late but whole"


def test_server_table_env_and_flags(tmp_path, monkeypatch):
    from smoa.server.settings import load_server_config, resolve_options
    from smoa.types import ConfigError

    p = tmp_path / "s.toml"
    p.write_text('[server]\nmax_in_flight = 2\nsave_traces = false\napi_key_env = "MY_KEY"\n\n[pipelines.x]\nmethod = "moa"\nn = 2\n')
    monkeypatch.setenv("MY_KEY", "k1")
    cfg, table = load_server_config(p)
    assert list(cfg.pipelines) == ["x"] and table.max_in_flight == 2
    o = resolve_options(table)
    assert (o.max_in_flight, o.save_traces, o.api_key) == (2, False, "k1")
    monkeypatch.setenv("SMOA_MAX_IN_FLIGHT", "3")
    assert resolve_options(table).max_in_flight == 3  # environment over file
    assert resolve_options(table, max_in_flight=5).max_in_flight == 5  # flags over both
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ConfigError, match="MY_KEY, which is not set"):
        resolve_options(table)
    p.write_text("[server]\nmax_inflight = 2\n")
    with pytest.raises(ConfigError, match=r"server: max_inflight: unknown field"):
        load_server_config(p)
    p.write_text('method = "moa"\nn = 2\n')  # a one-pipeline file without [server] still loads
    cfg, table = load_server_config(p)
    assert list(cfg.pipelines) == ["default"] and table.max_in_flight is None


def test_client_that_goes_away_frees_its_slot(make_server):
    be = ScriptedBackend(responder=mixture_responder(), latency_s=0.5)
    srv = make_server(backend=be, max_in_flight=1)
    stream = client(srv).chat.completions.create(
        model="smoa", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_body={"smoa": {"n": 3, "k": 2, "max_rounds": 2, "events": True}},
    )
    next(iter(stream))  # the first chunk: the mixture is running
    assert WEB.get(f"{srv.root}/health").json()["in_flight"] == 1
    stream.close()
    deadline = time.monotonic() + 5
    while WEB.get(f"{srv.root}/health").json()["in_flight"]:
        assert time.monotonic() < deadline, "the abandoned query still holds its slot"
        time.sleep(0.05)
    calls_at_close = len(be.calls)
    time.sleep(1.2)
    assert len(be.calls) == calls_at_close  # the mixture stopped, not just the reply
