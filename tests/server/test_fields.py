"""Every request field is honoured or refused with a 400 that names it (issue 12, item 1)."""

import json
import random

import httpx
import openai
import pytest

from smoa.server.stops import StopCutter, cut
from smoa.testing import ScriptedBackend, mixture_responder, stage_of
from smoa.types import StreamEvent

pytestmark = pytest.mark.server

WEB = httpx.Client(timeout=30)
HI = [{"role": "user", "content": "hi"}]


def client(srv):
    return openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=30)


class ChunkyBackend(ScriptedBackend):
    """Streams its answer three characters at a time, so a stop sequence spans chunks."""

    async def stream(self, request):
        comp = await self.complete(request)
        for i in range(0, len(comp.text), 3):
            yield StreamEvent(delta=comp.text[i:i + 3])
        yield StreamEvent(completion=comp)


COUNT = "1, 2, 3, 4, 5, 6, 7"


def post(srv, body):
    return WEB.post(f"{srv.base_url}/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "extra, param, needle",
    [
        ({"n": 0}, "n", "n must be 1"),
        ({"stream": "yes"}, "stream", "stream"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "messages[0].content[0].text", "is null"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "is a int"),
        ({"logprobs": True}, "logprobs", "logprobs is not supported"),
        ({"top_logprobs": 2}, "top_logprobs", "not supported"),
        ({"logit_bias": {"42": 5}}, "logit_bias", "not supported"),
        ({"top_p": 1.5}, "top_p", "top_p"),
        ({"presence_penalty": 3}, "presence_penalty", "presence_penalty"),
        ({"frequency_penalty": "high"}, "frequency_penalty", "frequency_penalty"),
        ({"stop": ""}, "stop", "empty stop"),
        ({"stop": ["a"] * 17}, "stop", "at most 16"),
        ({"bogus_field": 1}, "bogus_field", "unknown field 'bogus_field'"),
        ({"reasoning_effort": "high"}, "reasoning_effort", "not supported"),
        ({"modalities": ["text", "audio"]}, "modalities", "text only"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream"),
    ],
)
def test_bad_fields_are_400_naming_the_field(make_server, extra, param, needle):
    srv = make_server()
    r = post(srv, {"model": "single", "messages": HI, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"], err
    assert "Traceback" not in r.text
    assert not srv.backend.calls  # refused before any model ran


def test_deeply_nested_json_is_400(make_server):
    srv = make_server()
    for depth in (100, 100_000):  # past our limit; past Python's recursion limit
        body = '{"model": "single", "messages": ' + "[" * depth + "]" * depth + "}"
        r = WEB.post(f"{srv.base_url}/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text[:300]
        assert "nests deeper than 64 levels" in r.json()["error"]["message"]


@pytest.mark.parametrize("offset", ["9999999999999999999999999", "-1", "x"])
def test_trace_list_offset_out_of_range_is_400(make_server, offset):
    srv = make_server()
    for path in ("/traces.json", "/traces"):
        r = WEB.get(f"{srv.root}{path}", params={"offset": offset})
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["param"] == "offset"


def test_no_effect_fields_are_accepted(make_server):
    srv = make_server()
    resp = client(srv).chat.completions.create(
        model="single", messages=HI, user="u1", metadata={"a": "b"}, store=False, parallel_tool_calls=True,
    )
    assert resp.choices[0].message.content


def test_sampling_fields_reach_the_answer_writers(make_server):
    srv = make_server()
    client(srv).chat.completions.create(
        model="smoa", messages=HI, top_p=0.5, presence_penalty=0.25, frequency_penalty=-0.5, stop=["###"],
        extra_body={"smoa": {"n": 3, "k": 2, "max_rounds": 1}},
    )
    by_stage = {}
    for c in srv.backend.calls:
        by_stage.setdefault(stage_of(c), []).append(c.settings)
    assert len(by_stage["propose"]) == 3 and len(by_stage["aggregate"]) == 1
    for s in by_stage["propose"] + by_stage["aggregate"]:
        assert (s.top_p, s.presence_penalty, s.frequency_penalty) == (0.5, 0.25, -0.5)
    assert by_stage["aggregate"][0].stop == ("###",)
    assert all(s.stop is None for s in by_stage["propose"])  # a cut proposal would starve the mixture
    for s in by_stage["judge"] + by_stage.get("role", []):
        assert s.top_p is None and s.stop is None and s.presence_penalty is None


def test_stop_goes_to_the_single_model(make_server):
    srv = make_server()
    client(srv).chat.completions.create(model="single", messages=HI, stop="\n\n")
    assert [c.settings.stop for c in srv.backend.calls] == [("\n\n",)]


@pytest.mark.parametrize("method", ["single", "moa"])
@pytest.mark.parametrize("stream", [False, True])
def test_stop_cuts_the_final_answer(make_server, method, stream):
    # the scripted writer ignores its stop setting, as some upstreams do: the server still cuts
    srv = make_server(backend=ChunkyBackend(responder=mixture_responder(propose=COUNT, aggregate=COUNT)))
    args = {"model": method, "messages": HI, "stop": [", 5", "never"], "extra_body": {"smoa": {"n": 2, "max_rounds": 1}} if method == "moa" else {}}
    if not stream:
        resp = client(srv).chat.completions.create(**args)
        assert resp.choices[0].message.content == "1, 2, 3, 4"
        assert resp.choices[0].finish_reason == "stop"
        return
    chunks = list(client(srv).chat.completions.create(stream=True, **args))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 2 and "".join(pieces) == "1, 2, 3, 4"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_not_found_leaves_the_answer_whole(make_server):
    srv = make_server(backend=ChunkyBackend(responder=mixture_responder(propose=COUNT)))
    chunks = list(client(srv).chat.completions.create(model="single", messages=HI, stop=["7,", "8"], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == COUNT


def test_models_say_what_really_runs(make_server):
    srv = make_server(config_text="""
[backends.hosted]
type = "openai"
base_url = "http://127.0.0.1:9/v1"

[pipelines.remote]
method = "moa"
n = 2
agent = { backend = "hosted", model = "gpt-x" }
""")
    models = {m.id: m for m in client(srv).models.list().data}
    remote = models["remote"].smoa
    assert "embedded" not in remote["description"]
    assert "openai:http://127.0.0.1:9/v1" in remote["description"] and "gpt-x" in remote["description"]
    assert set(remote["stages"]) == {"proposers", "aggregator"}
    # smoa's judge decides the stop in its own verdict: no moderator agent runs
    assert "judge" in models["smoa"].smoa["stages"] and "moderator" not in models["smoa"].smoa["stages"]
    assert set(models["single"].smoa["stages"]) == {"proposers"}


# -- the cut itself, as pure functions ---------------------------------------------------


def test_cut_takes_the_earliest_stop():
    assert cut("abcXdefY", ("Y", "X")) == ("abc", True)
    assert cut("abc", ("Z",)) == ("abc", False)


def test_stop_cutter_agrees_with_cut_for_any_split():
    rng = random.Random(0)
    alphabet = "ab, \n"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        stops = tuple("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3)))
        bounds = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        pieces = [text[i:j] for i, j in zip([0, *bounds], [*bounds, len(text)], strict=True)]
        sc = StopCutter(stops)
        got = "".join(sc.feed(p) for p in pieces) + sc.flush()
        want, found = cut(text, stops)
        assert got == want and sc.stopped == found, (text, stops, pieces)


def test_usage_counts_cached_tokens_apart(make_server, tmp_path):
    from smoa.cache import CachedBackend, ResponseCache

    be = ScriptedBackend(responder=mixture_responder())
    srv = make_server(backend=CachedBackend(be, ResponseCache(tmp_path / "responses.sqlite3")))
    args = {"model": "moa", "messages": HI, "temperature": 0, "seed": 5, "extra_body": {"smoa": {"n": 2, "max_rounds": 1}}}
    first = client(srv).chat.completions.create(**args)
    assert first.usage.total_tokens > 0
    assert first.usage.smoa_cached == {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    again = client(srv).chat.completions.create(**args)  # every call of this query is a cache hit
    assert len(be.calls) == 3 and again.choices[0].message.content == first.choices[0].message.content
    assert (again.usage.prompt_tokens, again.usage.completion_tokens, again.usage.total_tokens) == (0, 0, 0)
    cached = again.usage.smoa_cached
    assert cached["calls"] == 3
    assert (cached["prompt_tokens"], cached["completion_tokens"]) == (first.usage.prompt_tokens, first.usage.completion_tokens)
    chunks = list(client(srv).chat.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    assert chunks[-1].usage.smoa_cached["calls"] == 3 and chunks[-1].usage.total_tokens == 0


# -- structured output (issue 12 item 2) ---------------------------------------------------


def json_when_asked(text_without_schema="prose, not JSON"):
    """Answers JSON that fits the schema when the request carries one, else prose."""

    def answer(req):
        schema = req.json_schema
        if schema is None:
            return text_without_schema
        if schema.get("properties", {}).get("city"):
            return json.dumps({"city": "Paris", "population_m": 2.1})
        return json.dumps({"ok": True})

    return answer


def test_structured_output_with_a_pydantic_model(make_server):
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        population_m: float

    be = ScriptedBackend(responder=mixture_responder(propose="Paris, about 2.1 million", aggregate=json_when_asked()))
    srv = make_server(backend=be)
    done = client(srv).chat.completions.parse(
        model="moa", messages=[{"role": "user", "content": "Largest city of France?"}], response_format=City,
        extra_body={"smoa": {"n": 2, "max_rounds": 1}},
    )
    assert done.choices[0].message.parsed == City(city="Paris", population_m=2.1)
    props = [c for c in be.calls if stage_of(c) == "propose"]
    agg = [c for c in be.calls if stage_of(c) == "aggregate"]
    assert len(props) == 2 and all(c.json_schema is None for c in props)  # proposers write freely ...
    assert all("population_m" in c.messages[0]["content"] for c in props)  # ... but are told the shape
    assert agg[0].json_schema["required"] == ["city", "population_m"]  # the writer asks for the schema


@pytest.mark.parametrize("stream", [False, True])
def test_json_object_on_single(make_server, stream):
    be = ScriptedBackend(responder=mixture_responder(propose=json_when_asked()))
    srv = make_server(backend=be)
    args = {"model": "single", "messages": HI, "response_format": {"type": "json_object"}}
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client(srv).chat.completions.create(stream=True, **args) if c.choices)
    else:
        text = client(srv).chat.completions.create(**args).choices[0].message.content
    assert json.loads(text) == {"ok": True}
    assert be.calls[0].json_schema == {"type": "object"}


def test_invalid_answer_is_repaired_once(make_server):
    def repair_or_prose(req):
        if req.messages[0]["content"].startswith("You fix replies"):
            return '```json\n{"city": "Paris"}\n```'
        return "the city is Paris"

    srv = make_server(backend=ScriptedBackend(responder=mixture_responder(aggregate=repair_or_prose, propose=repair_or_prose)))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    raw = client(srv).chat.completions.with_raw_response.create(
        model="moa", messages=HI, extra_body={"smoa": {"n": 2, "max_rounds": 1}},
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}},
    )
    assert json.loads(raw.parse().choices[0].message.content) == {"city": "Paris"}
    tr = WEB.get(f"{srv.root}/traces/{raw.headers['x-smoa-trace-id']}.json").json()
    assert tr["calls"][-1]["stage"] == "repair" and tr["finish"]["repair"]["ok"] is True
    assert raw.parse().usage.total_tokens == tr["cost"]["total"]["total_tokens"]  # the repair is paid for too


@pytest.mark.parametrize("stream", [False, True])
def test_answer_that_stays_invalid_is_an_error_never_a_success(make_server, stream):
    srv = make_server(backend=ScriptedBackend(responder=mixture_responder(propose="no JSON here")))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with pytest.raises(openai.APIStatusError) as e:
        r = client(srv).chat.completions.create(
            model="single", messages=HI, stream=stream,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )
        list(r) if stream else None
    assert e.value.status_code == 502 and e.value.body["code"] == "invalid_structured_output"
    assert "is not JSON" in e.value.body["message"] and "after one repair it still" in e.value.body["message"]


@pytest.mark.parametrize(
    "rf, param",
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}, "response_format.json_schema.name"),
        ({"type": "json_object", "stop": 1}, "response_format.stop"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "extra": 1}}, "response_format.json_schema.extra"),
    ],
)
def test_bad_response_format_is_400(make_server, rf, param):
    srv = make_server()
    r = post(srv, {"model": "single", "messages": HI, "response_format": rf})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_stop_with_json_is_400(make_server):
    r = post(make_server(), {"model": "single", "messages": HI, "response_format": {"type": "json_object"}, "stop": "}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
