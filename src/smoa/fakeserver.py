"""A real OpenAI-compatible HTTP server for tests and benchmarks, on 127.0.0.1.

It answers every pipeline stage plausibly (proposals, judge and moderator JSON, roles,
aggregation) after a fixed latency, and can inject faults at a set rate: HTTP 500, 429
with Retry-After, hangs (client time-outs), malformed JSON and truncated streams; and, when
named in ``--faults``, lies: token counts of 10**30, -5 or "lots", ``content: null``, and
302 redirects; and ``cut-early``, a reply cut before any text (a stream with no event, a body
with no JSON). ``--fault-first N`` faults exactly the first N requests (the kinds of
``--faults`` in turn), for tests that need one failure and then an answer;
``--no-stream-usage`` sends streams without a usage chunk, as many servers do.

    python -m smoa.fakeserver --port 8123 --latency 0.1 --fault-rate 0.2

GET /stats returns what it served: requests, faults by kind, peak in-flight requests, and
the last value of each sampling field it was sent (`seen`).

A request whose response_format carries a JSON schema that the stage's usual answer does
not fit (a final answer, a tool decision) gets a small instance of the schema instead:
arrays hold one item (their minItems when the last message is a tool result, so a tool loop
ends), strings "fake", numbers 1.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from .testing import mixture_responder
from .types import Request, Settings

FAULT_KINDS = ("500", "429", "timeout", "malformed", "truncate")
# replies that are well-formed HTTP and JSON but carry values no real server should send;
# not in the default mix (--faults names them)
BAD_VALUE_KINDS = ("huge-usage", "negative-usage", "text-usage", "null-content", "redirect")
_BAD_USAGE = {"huge-usage": 10**30, "negative-usage": -5, "text-usage": "lots"}
# faults that only --faults names (not in the default mix)
EXTRA_FAULT_KINDS = ("cut-early",)
ALL_FAULT_KINDS = FAULT_KINDS + BAD_VALUE_KINDS + EXTRA_FAULT_KINDS


@dataclass
class FakeConfig:
    latency_s: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    fault_models: tuple[str, ...] = ()  # empty: any model may fault
    hang_s: float = 30.0
    retry_after_s: float = 0.05
    seed: int = 0
    api_key: str | None = None
    tokens_per_word: int = 1
    reject_json_schema: bool = False  # answer 400 to response_format json_schema (older servers)
    reject_tools: bool = False  # answer 400 to tools (servers without native tool calling)
    fault_by_model: bool = False  # a model named after a fault kind gets that fault, every call
    fault_first: int = 0  # the first N requests fault (the kinds of `faults` in turn), then none
    stream_usage: bool = True  # False: streams end without a usage chunk


@dataclass
class Stats:
    requests: int = 0
    streams: int = 0  # requests that asked for a stream
    ok: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)  # sampling field -> the last value sent


SAMPLING_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "stop", "max_tokens", "seed",
                   "tools", "tool_choice")


def example_of(schema: Any, few: bool = False) -> Any:
    """A small value that fits `schema` (the subset smoa's answers and tool decisions use)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], few)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_of(v, few) for k, v in props.items() if k in (schema.get("required") or props)}
    if kind == "array":
        n = int(schema.get("minItems", 0)) if few else max(1, int(schema.get("minItems", 0)))
        return [example_of(schema.get("items", {}), few) for _ in range(n)]
    return {"string": "fake", "integer": 1, "number": 1.0, "boolean": True, "null": None}.get(str(kind), "fake")


def _after_tool_result(req: Request) -> bool:
    """Whether the latest message carries a tool's result (smoa.server.tools words it as "Result
    of the tool call ..."). A writer's prompt wraps the user's latest message in its own text
    (the answers before it, the task around it), so the words are looked for anywhere in it."""
    last = req.messages[-1]["content"] if req.messages else ""
    return isinstance(last, str) and "Result of the tool call" in last


def _tool_reply(body: dict[str, Any], req: Request, model: str, cid: str, usage: Any) -> dict[str, Any]:
    choice = body.get("tool_choice")
    tools = [t["function"] for t in body["tools"] if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if isinstance(choice, dict):
        tools = [t for t in tools if t.get("name") == choice.get("function", {}).get("name")] or tools
    if _after_tool_result(req) and choice in (None, "auto"):
        msg: dict[str, Any] = {"role": "assistant", "content": "fake"}
        finish = "stop"
    else:
        t = tools[0]
        args = json.dumps(example_of(t.get("parameters") or {"type": "object"}))
        msg = {"role": "assistant", "content": None,
               "tool_calls": [{"id": "call_fake1", "type": "function", "function": {"name": t["name"], "arguments": args}}]}
        finish = "tool_calls"
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}], "usage": usage(req, msg["content"] or "x")}


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A checked validator per schema, made once: `jsonschema.validate` checks the schema
    against its metaschema on every call (about 1.4-2 ms for smoa's verdict schema, against
    0.03 ms for a made validator), which held the server's one event loop on every judge
    call and stalled every other reply in flight: the benchmarks' bound is the latency, so
    the fake upstream must not add its own queue."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _fits(text: str, schema: dict[str, Any]) -> bool:
    try:
        return bool(_validator(json.dumps(schema, sort_keys=True)).is_valid(json.loads(text)))
    except Exception:  # not JSON, a schema that is not one, or no jsonschema: answer an instance
        return False


def build_app(cfg: FakeConfig) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    rng = random.Random(cfg.seed)
    stats = Stats()
    responder = mixture_responder(
        propose=lambda r: f"Proposal from {r.model} (sample {r.settings.seed}): the answer is {len(r.messages)}."
    )

    def to_request(body: dict[str, Any]) -> Request:
        rf = body.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else rf.get("schema")
        return Request(
            messages=tuple({"role": m.get("role", "user"), "content": m.get("content") or ""} for m in body.get("messages", [])),
            model=body.get("model", ""),
            settings=Settings(seed=body.get("seed")),
            json_schema=schema,
        )

    def usage(req: Request, text: str) -> dict[str, int]:
        p = sum(len(m["content"].split()) for m in req.messages) * cfg.tokens_per_word
        c = len(text.split()) * cfg.tokens_per_word
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def completions(request: HttpRequest) -> Response:
        if cfg.api_key and request.headers.get("authorization") != f"Bearer {cfg.api_key}":
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, status_code=401)
        body = await request.json()
        if cfg.reject_json_schema and (body.get("response_format") or {}).get("type") == "json_schema":
            return JSONResponse({"error": {"message": "response_format json_schema is not supported", "type": "invalid_request_error"}},
                                status_code=400)
        if body.get("tools") and cfg.reject_tools:
            return JSONResponse({"error": {"message": "tools are not supported by this server", "type": "invalid_request_error"}},
                                status_code=400)
        model = body.get("model", "")
        stats.seen.update({k: body[k] for k in SAMPLING_FIELDS if k in body})
        stats.requests += 1
        stats.by_model[model] = stats.by_model.get(model, 0) + 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            fault = None
            if cfg.fault_by_model and model in ALL_FAULT_KINDS:
                fault = model
                stats.faults[fault] = stats.faults.get(fault, 0) + 1
            elif cfg.fault_first and cfg.faults and stats.requests <= cfg.fault_first:
                fault = cfg.faults[(stats.requests - 1) % len(cfg.faults)]
                stats.faults[fault] = stats.faults.get(fault, 0) + 1
            elif cfg.fault_rate and (not cfg.fault_models or model in cfg.fault_models) and rng.random() < cfg.fault_rate:
                fault = rng.choice(cfg.faults)
                stats.faults[fault] = stats.faults.get(fault, 0) + 1
            if cfg.latency_s:
                await asyncio.sleep(cfg.latency_s)
            if fault == "500":
                return JSONResponse({"error": {"message": "injected server error", "type": "server_error"}}, status_code=500)
            if fault == "429":
                return JSONResponse(
                    {"error": {"message": "injected rate limit", "type": "rate_limit"}},
                    status_code=429,
                    headers={"retry-after": str(cfg.retry_after_s)},
                )
            if fault == "timeout":
                await asyncio.sleep(cfg.hang_s)
                return JSONResponse({"error": {"message": "too late"}}, status_code=504)
            if fault == "malformed":
                return Response('{"id": "x", "choices": [{"mess', media_type="application/json")
            if fault == "redirect":
                return Response(status_code=302, headers={"location": "http://127.0.0.1:9/v1/chat/completions?sig=abc"})
            req = to_request(body)
            if body.get("tools"):  # native tool calling: call the chosen (or first) tool until a result came back
                return JSONResponse(_tool_reply(body, req, model, f"chatcmpl-{stats.requests}", usage))
            text = responder(req)
            if req.json_schema is not None and not _fits(text, req.json_schema):
                text = json.dumps(example_of(req.json_schema, few=_after_tool_result(req)))
            u: dict[str, Any] = usage(req, text)
            if fault in _BAD_USAGE:
                u = {**u, "completion_tokens": _BAD_USAGE[fault]}
            content = None if fault == "null-content" else text
            cid = f"chatcmpl-{stats.requests}"
            if body.get("stream"):
                stats.streams += 1
                if fault == "cut-early":
                    return StreamingResponse(_nothing(), media_type="text/event-stream")
                return StreamingResponse(_stream(cid, model, content, u if cfg.stream_usage else None,
                                                 truncate=fault == "truncate"),
                                         media_type="text/event-stream")
            if fault == "cut-early":
                return Response("", media_type="application/json")
            if fault == "truncate":
                return Response('{"id": "x", "object": "chat.completion", "choices": [', media_type="application/json")
            stats.ok += 1
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": u,
                }
            )
        finally:
            stats.in_flight -= 1

    async def _nothing():
        return
        yield  # an async generator that ends at once: the connection closes with no event

    async def _stream(cid: str, model: str, text: str | None, u: dict[str, Any] | None, truncate: bool) -> Any:
        words = (text or "").split(" ")
        for i, w in enumerate(words):
            if truncate and i >= max(1, len(words) // 2):
                return  # connection ends with no [DONE]
            piece = None if text is None else w if i == 0 else " " + w
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        end = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(end)}\n\n"
        if u is not None:
            yield f"data: {json.dumps({'id': cid, 'object': 'chat.completion.chunk', 'created': 0, 'model': model, 'choices': [], 'usage': u})}\n\n"
        yield "data: [DONE]\n\n"

    async def models(request: HttpRequest) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "smoa"}]})

    async def get_stats(request: HttpRequest) -> Response:
        return JSONResponse(stats.__dict__)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/stats", get_stats),
        ]
    )
    app.state.stats = stats
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m smoa.fakeserver", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per call")
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma list of " + ",".join(ALL_FAULT_KINDS))
    ap.add_argument("--fault-models", default="", help="comma list of models that may fault (default: all)")
    ap.add_argument("--hang", type=float, default=30.0, help="seconds a 'timeout' fault hangs")
    ap.add_argument("--retry-after", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--reject-json-schema", action="store_true", help="answer 400 to response_format json_schema")
    ap.add_argument("--reject-tools", action="store_true", help="answer 400 to tools (no native tool calling)")
    ap.add_argument("--fault-by-model", action="store_true",
                    help="a request for a model named after a fault kind (e.g. null-content) gets that fault")
    ap.add_argument("--fault-first", type=int, default=0, help="fault exactly the first N requests, then none")
    ap.add_argument("--no-stream-usage", action="store_true", help="streams end without a usage chunk")
    a = ap.parse_args(argv)
    if not a.host.startswith("127.") and a.host not in ("localhost", "::1"):
        ap.error("the fake server listens on loopback only")
    faults = tuple(f for f in a.faults.split(",") if f)
    bad = [f for f in faults if f not in ALL_FAULT_KINDS]
    if bad:
        ap.error(f"unknown fault kinds {bad}: use {', '.join(ALL_FAULT_KINDS)}")
    if a.fault_first < 0:
        ap.error("--fault-first must be 0 or more")
    cfg = FakeConfig(
        latency_s=a.latency, fault_rate=a.fault_rate, faults=faults,
        fault_models=tuple(m for m in a.fault_models.split(",") if m), hang_s=a.hang,
        retry_after_s=a.retry_after, seed=a.seed, api_key=a.api_key, reject_json_schema=a.reject_json_schema,
        reject_tools=a.reject_tools,
        fault_by_model=a.fault_by_model, fault_first=a.fault_first, stream_usage=not a.no_stream_usage,
    )
    import uvicorn

    uvicorn.run(build_app(cfg), host=a.host, port=a.port, log_level="warning", backlog=2048, timeout_keep_alive=30)


if __name__ == "__main__":
    main()
