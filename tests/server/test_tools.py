"""Tool calling through a mixture, from the openai SDK and LangChain (issue 12 item 3)."""

import json

import openai
import pytest

from smoa.testing import ScriptedBackend, mixture_responder, stage_of

pytestmark = pytest.mark.server

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time now.", "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def decide(req):
    """A writer that calls get_weather until it sees its result, then answers from it."""
    if req.json_schema is None:
        return "I would look up the weather in Paris."
    convo = " ".join(m["content"] for m in req.messages)
    if "Result of the tool call get_weather" in convo:
        return json.dumps({"tool_calls": [], "content": "It is sunny in Paris, 21 C."})
    names = json.dumps(req.json_schema)
    name = "get_time" if '"const": "get_weather"' not in names else "get_weather"
    args = {"city": "Paris"} if name == "get_weather" else {}
    return json.dumps({"tool_calls": [{"name": name, "arguments": args}], "content": ""})


def client(srv):
    return openai.OpenAI(base_url=srv.base_url, api_key="none", max_retries=0, timeout=30)


def server(make_server):
    return make_server(backend=ScriptedBackend(responder=mixture_responder(propose=decide, aggregate=decide)))


def run_tool(call):
    assert call.function.name == "get_weather"
    return json.dumps({"city": json.loads(call.function.arguments)["city"], "sky": "sunny", "temp_c": 21})


@pytest.mark.parametrize("method", ["single", "moa"])
def test_full_tool_loop_from_the_openai_sdk(make_server, method):
    srv = server(make_server)
    c = client(srv)
    extra = {"smoa": {"n": 2, "max_rounds": 1}} if method == "moa" else None
    first = c.chat.completions.create(model=method, messages=ASK, tools=[WEATHER, CLOCK], extra_body=extra)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and json.loads(call.function.arguments) == {"city": "Paris"}
    msgs = [*ASK, choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": run_tool(call)}]
    final = c.chat.completions.create(model=method, messages=msgs, tools=[WEATHER, CLOCK], extra_body=extra)
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content == "It is sunny in Paris, 21 C."
    assert not final.choices[0].message.tool_calls
    # every agent of the second round saw the tools, the call and its result
    second = srv.backend.calls[len(srv.backend.calls) // 2:]
    for req in second:
        text = " ".join(m["content"] for m in req.messages)
        if stage_of(req) in ("propose", "aggregate"):
            assert "get_weather" in text and call.id in text and '"sky": "sunny"' in text


def test_tool_call_streamed(make_server):
    srv = server(make_server)
    chunks = list(client(srv).chat.completions.create(model="single", messages=ASK, tools=[WEATHER], stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].index == 0
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the SDK's stream helper puts the pieces together
    with client(srv).chat.completions.stream(model="single", messages=ASK, tools=[WEATHER]) as s:
        done = s.get_final_completion()
    assert done.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_tool_choice_is_honoured(make_server):
    srv = server(make_server)
    c = client(srv)
    named = c.chat.completions.create(model="single", messages=ASK, tools=[WEATHER, CLOCK],
                                      tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"
    schema = srv.backend.calls[-1].json_schema["properties"]["tool_calls"]
    assert schema["minItems"] == 1 and schema["items"]["properties"]["name"] == {"const": "get_time"}
    assert srv.backend.calls[-1].json_schema["required"] == ["tool_calls"]  # a call is due: no prose
    c.chat.completions.create(model="single", messages=ASK, tools=[WEATHER], tool_choice="required")
    assert srv.backend.calls[-1].json_schema["properties"]["tool_calls"]["minItems"] == 1
    c.chat.completions.create(model="single", messages=ASK, tools=[WEATHER], parallel_tool_calls=False)
    assert srv.backend.calls[-1].json_schema["properties"]["tool_calls"]["maxItems"] == 1
    none = c.chat.completions.create(model="single", messages=ASK, tools=[WEATHER], tool_choice="none")
    assert srv.backend.calls[-1].json_schema is None and none.choices[0].finish_reason == "stop"
    assert none.choices[0].message.content == "I would look up the weather in Paris."


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]}, "tools[0].function.parameters"),
        ({"tools": [WEATHER], "stop": "x"}, "stop"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_unknown", "content": "x"}]}, "messages[1].tool_call_id"),
    ],
)
def test_bad_tool_requests_are_400(make_server, extra, param):
    import httpx

    srv = server(make_server)
    r = httpx.post(f"{srv.base_url}/chat/completions", json={"model": "single", "messages": ASK, **extra}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_langchain_bind_tools_loop_and_structured_output(make_server):
    lc = pytest.importorskip("langchain_openai", reason="langchain-openai is in the dev extra: pip install -e '.[dev]'")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from pydantic import BaseModel

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city now."""
        return json.dumps({"city": city, "sky": "sunny", "temp_c": 21})

    srv = server(make_server)
    llm = lc.ChatOpenAI(model="single", base_url=srv.base_url, api_key="none", max_retries=0, timeout=30)
    with_tools = llm.bind_tools([get_weather])
    msgs = [HumanMessage("What is the weather in Paris?")]
    ai = with_tools.invoke(msgs)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather" and ai.tool_calls[0]["args"] == {"city": "Paris"}
    msgs += [ai, ToolMessage(get_weather.invoke(ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"])]
    final = with_tools.invoke(msgs)
    assert not final.tool_calls and final.content == "It is sunny in Paris, 21 C."

    class City(BaseModel):
        city: str
        population_m: float

    def city(req):
        value = {"city": "Paris", "population_m": 2.1}
        if req.json_schema is None:
            return "Paris"
        if "tool_calls" in req.json_schema.get("properties", {}):  # method="function_calling": a call to the tool City
            return json.dumps({"tool_calls": [{"name": "City", "arguments": value}], "content": ""})
        return json.dumps(value)

    srv2 = make_server(backend=ScriptedBackend(responder=mixture_responder(propose=city, aggregate=city)))
    llm2 = lc.ChatOpenAI(model="moa", base_url=srv2.base_url, api_key="none", max_retries=0, timeout=30,
                         extra_body={"smoa": {"n": 2, "max_rounds": 1}})
    for method in ("json_schema", "function_calling", "json_mode"):
        got = llm2.with_structured_output(City, method=method).invoke("Largest city of France, population in millions?")
        assert got == City(city="Paris", population_m=2.1), method


def test_cache_key_counts_the_tools():
    from dataclasses import replace

    from smoa.cache import request_key
    from smoa.server.tools import parse_tools
    from smoa.types import Request

    plan = parse_tools([WEATHER], "auto", None)
    tools, choice = plan.native()
    base = Request(messages=tuple(ASK), model="m", json_schema=plan.schema())
    other = parse_tools([{**WEATHER, "function": {**WEATHER["function"], "description": "Other."}}], "auto", None).native()[0]
    keys = {request_key("b", base), request_key("b", replace(base, tools=tools, tool_choice=choice)),
            request_key("b", replace(base, tools=other, tool_choice=choice))}
    assert len(keys) == 3
