

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
    assert agg[0].json_schema == City.model_json_schema() | {"additionalProperties": False} or agg[0].json_schema["required"] == ["city", "population_m"]


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
    srv = make_server(backend=ScriptedBackend(responder=mixture_responder(aggregate="the city is Paris")))
    calls = []

    def repair_or_prose(req):
        calls.append(req)
        if req.messages[0]["content"].startswith("You fix replies"):
            return '```json\n{"city": "Paris"}\n```'
        return "the city is Paris"

    srv.backend.responder = mixture_responder(aggregate=repair_or_prose)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    raw = client(srv).chat.completions.with_raw_response.create(
        model="moa", messages=HI, extra_body={"smoa": {"n": 2, "max_rounds": 1}},
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}},
    )
    assert json.loads(raw.parse().choices[0].message.content) == {"city": "Paris"}
    tr = WEB.get(f"{srv.root}/traces/{raw.headers['x-smoa-trace-id']}.json").json()
    assert [c["stage"] for c in tr["calls"]][-1] == "repair" and tr["finish"]["repair"]["ok"] is True
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
    assert "after one repair" in e.value.body["message"]


@pytest.mark.parametrize(
    "rf, param",
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}, "response_format.json_schema.name"),
    ],
)
def test_bad_response_format_is_400(make_server, rf, param):
    srv = make_server()
    r = post(srv, {"model": "single", "messages": HI, "response_format": rf})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
