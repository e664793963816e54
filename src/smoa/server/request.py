"""The chat request: every OpenAI field is honoured or refused with a 400 that names it.

What each field does is listed in the README ("Serving"); this module is where that table
is enforced. Unknown fields are refused too: a field dropped in silence changes a client's
results without a word (a `stop` that never applies, a penalty that never reaches a model).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ..answerformat import AnswerFormat, FormatError
from ..types import Message, Settings, SmoaError, normalize_messages
from .errors import bad_request
from .tools import ToolPlan, history_text, parse_tools

MAX_JSON_DEPTH = 64  # deeper bodies are refused before any parser recurses into them
MAX_STOPS = 16

# Accepted and recorded nowhere: they describe the caller, not the answer (README: Serving).
NO_EFFECT = ("user", "metadata", "store", "service_tier")


class SmoaOptions(BaseModel):
    """The `smoa` extension object a client may send (extra_body={"smoa": {...}})."""

    model_config = ConfigDict(extra="forbid", strict=True)

    n: int | None = Field(None, ge=1, le=64)
    k: int | None = Field(None, ge=1)
    max_rounds: int | None = Field(None, ge=1, le=16)
    events: bool = False  # stream proposer/judge/moderator progress as extra chunks


class ChatRequest(BaseModel):
    # strict: "stream": "yes" or "n": "1" is a client bug to report, not to guess at
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    # accepted, no effect (NO_EFFECT)
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    smoa: SmoaOptions | None = None
    _format: AnswerFormat | None = PrivateAttr(None)
    _tools: ToolPlan | None = PrivateAttr(None)

    @property
    def answer_format(self) -> AnswerFormat | None:
        """The final answer's JSON shape: the tool decision when tools may be called, else response_format's."""
        return self._tools.answer_format() if self._tools is not None else self._format

    @property
    def tool_plan(self) -> ToolPlan | None:
        return self._tools

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def _depth_ok(value: Any, limit: int) -> bool:
    """True when `value` nests no deeper than `limit` (iterative: no recursion to overflow)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            if d > limit:
                return False
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return True


def _field_message(err: Any) -> tuple[str, str]:  # a pydantic ErrorDetails
    loc = ".".join(str(x) for x in err["loc"])
    if err["type"] == "extra_forbidden":
        return loc, f"unknown field {loc!r}: smoa does not support it; remove it (README: Serving lists every field)"
    return loc, f"{loc}: {err['msg']}"


def parse_request(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body)
    except RecursionError:
        raise bad_request(f"the request body nests deeper than {MAX_JSON_DEPTH} levels: flatten it") from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    if not _depth_ok(data, MAX_JSON_DEPTH):
        deepest = next((k for k, v in data.items() if not _depth_ok(v, MAX_JSON_DEPTH - 1)), None)
        raise bad_request(f"{deepest}: nests deeper than {MAX_JSON_DEPTH} levels: flatten it", param=deepest)
    for k in ("reasoning_effort", "audio", "prediction", "web_search_options"):
        if data.get(k) is not None:
            raise bad_request(f"{k} is not supported by smoa pipelines: remove it", k)
    try:
        req = ChatRequest(**data)
    except ValidationError as e:
        param, msg = _field_message(e.errors()[0])
        raise bad_request(msg, param=param) from None
    check_fields(req)
    return req


def check_fields(req: ChatRequest) -> None:
    if req.n is not None and req.n != 1:
        raise bad_request(f"n = {req.n}: smoa writes exactly one answer per request, so n must be 1 (or absent)", "n")
    if req.logprobs:
        raise bad_request("logprobs is not supported: a mixture's answer has no single model's token probabilities; "
                          "remove logprobs", "logprobs")
    if req.top_logprobs is not None:
        raise bad_request("top_logprobs is not supported (no logprobs): remove it", "top_logprobs")
    if req.logit_bias:
        raise bad_request("logit_bias is not supported: the agents may run different models with different "
                          "vocabularies; remove it", "logit_bias")
    if req.modalities is not None and req.modalities != ["text"]:
        raise bad_request(f"modalities {req.modalities}: smoa answers in text only", "modalities")
    if req.functions or req.function_call is not None:
        raise bad_request("functions/function_call are the deprecated form of tools and not supported", "functions")
    req._tools = parse_tools(req.tools, req.tool_choice, req.parallel_tool_calls)
    try:
        req._format = AnswerFormat.from_response_format(req.response_format)
    except FormatError as e:
        raise bad_request(str(e), e.param) from None
    if req._format is not None and req.stop is not None:
        raise bad_request("stop with a JSON response_format would cut the JSON: remove stop", "stop")
    if req._tools is not None and req._format is not None:
        raise bad_request("tools together with a JSON response_format is not supported: send one of them",
                          "response_format")
    if req._tools is not None and req.stop is not None:
        raise bad_request("stop with tools would cut the tool call: remove stop", "stop")
    stops = req.stops
    if len(stops) > MAX_STOPS:
        raise bad_request(f"stop has {len(stops)} sequences: at most {MAX_STOPS}", "stop")
    if any(not s for s in stops):
        raise bad_request("stop: an empty stop sequence would cut every answer to nothing: remove it", "stop")
    opts = req.stream_options or {}
    extra = [k for k in opts if k != "include_usage"]
    if extra:
        raise bad_request(f"stream_options.{extra[0]} is not supported: only include_usage", f"stream_options.{extra[0]}")
    if opts and not req.stream:
        raise bad_request("stream_options is only allowed with stream: true", "stream_options")


def to_messages(raw: list[dict[str, Any]]) -> tuple[Message, ...]:
    """OpenAI messages to smoa's: text parts joined, 'developer' read as 'system'."""
    if not raw:
        raise bad_request("messages is empty: send at least one user message", "messages")
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise bad_request(f"messages[{i}] is not an object with role and content", f"messages[{i}]")
        as_text = history_text(m, i, call_names)  # tool calls and tool results, as text
        if as_text is not None:
            out.append(as_text)
            continue
        role = m.get("role")
        if role == "developer":
            role = "system"
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise bad_request(f"messages[{i}]: content part of type {kind!r} is not supported: send text",
                                      f"messages[{i}].content[{j}]")
                text = part.get("text")
                if not isinstance(text, str):
                    what = "null" if text is None else f"a {type(text).__name__}"
                    raise bad_request(f"messages[{i}].content[{j}].text is {what}: give the part's text as a string",
                                      f"messages[{i}].content[{j}].text")
                texts.append(text)
            content = "\n".join(texts)
        elif content is None and role == "assistant":
            content = ""
        elif content is not None and not isinstance(content, str):
            raise bad_request(f"messages[{i}].content is a {type(content).__name__}: give a string or a list of text parts",
                              f"messages[{i}].content")
        out.append({"role": role, "content": content})
    try:
        return normalize_messages(out)
    except SmoaError as e:
        raise bad_request(str(e), "messages") from None


def overrides_of(req: ChatRequest) -> dict[str, Any]:
    o: dict[str, Any] = {
        "temperature": req.temperature,
        "max_tokens": req.max_completion_tokens or req.max_tokens,
        "seed": req.seed,
    }
    if req.smoa is not None:
        o.update(n=req.smoa.n, k=req.smoa.k, max_rounds=req.smoa.max_rounds)
    return o


def writes_answer(method: str) -> str:
    """Which agent writes the final answer: the proposer where the policy finishes with the
    single answer, else the aggregator (mad's vote copies a proposer's answer: the server
    cuts that one at the stop itself)."""
    from ..policy import Finish, get_policy

    return "proposers" if get_policy(method).finish is Finish.SINGLE else "aggregator"


def apply_request_settings(pipe: Any, req: ChatRequest) -> Any:
    """The pipeline with the request's sampling settings on the agents that write answers.

    top_p and the penalties go to the proposers and the aggregator (judge, moderator and the
    role writer answer in JSON and keep their own settings); `stop` goes to the writer of
    the final answer only: a proposer cut short would hand a mixture half an answer.
    """
    sampling = Settings(top_p=req.top_p, presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty)
    writer = Settings(stop=req.stops or None)
    if not sampling.as_dict() and not writer.as_dict():
        return pipe
    final = writes_answer(pipe.method)

    def agent(a: Any, is_writer: bool) -> Any:
        s = a.settings.overlay(sampling)
        return replace(a, settings=s.overlay(writer) if is_writer else s)

    return replace(
        pipe,
        proposers=tuple(agent(a, final == "proposers") for a in pipe.proposers),
        aggregator=agent(pipe.aggregator, final == "aggregator"),
    )

