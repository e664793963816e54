"""POST /v1/chat/completions: the request, one engine run, and the reply (whole or streamed)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import otel
from ..engine import Engine, Result
from ..types import ConfigError, Message, SmoaError, normalize_messages
from .errors import ApiError, bad_request, from_exception

if TYPE_CHECKING:
    from .app import ServerState

log = logging.getLogger("smoa.server")

TRACE_HEADER = "X-Smoa-Trace-Id"
TRACE_URL_HEADER = "X-Smoa-Trace-Url"


class SmoaOptions(BaseModel):
    """The `smoa` extension object a client may send (extra_body={"smoa": {...}})."""

    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(None, ge=1, le=64)
    k: int | None = Field(None, ge=1)
    max_rounds: int | None = Field(None, ge=1, le=16)
    events: bool = False  # stream proposer/judge/moderator progress as extra chunks


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send many optional fields; unknown ones are ignored

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    smoa: SmoaOptions | None = None


def parse_request(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        req = ChatRequest(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise bad_request(f"{loc}: {err['msg']}", param=loc) from None
    if req.n not in (None, 1):
        raise bad_request("n > 1 is not supported: a mixture writes one answer; send several requests", "n")
    if req.tools or req.functions:
        raise bad_request("tools and function calling are not supported by smoa pipelines", "tools")
    rf = (req.response_format or {}).get("type")
    if rf not in (None, "text"):
        raise bad_request(f"response_format {rf!r} is not supported: smoa answers in text", "response_format")
    return req


def to_messages(raw: list[dict[str, Any]]) -> tuple[Message, ...]:
    """OpenAI messages to smoa's: text parts joined, 'developer' read as 'system'."""
    if not raw:
        raise bad_request("messages is empty: send at least one user message", "messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role in ("tool", "function"):
            raise bad_request(f"messages[{i}]: role {role!r} is not supported (no tool calling)", "messages")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise bad_request(f"messages[{i}]: content part of type {kind!r} is not supported: send text", "messages")
                texts.append(str(part.get("text", "")))
            content = "\n".join(texts)
        elif content is None and role == "assistant":
            content = ""
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


def usage_of(result_or_trace: Any) -> dict[str, int]:
    trace = result_or_trace.trace if isinstance(result_or_trace, Result) else result_or_trace
    t = trace.cost()["total"]
    return {
        "prompt_tokens": int(t["prompt_tokens"]),
        "completion_tokens": int(t["completion_tokens"]),
        "total_tokens": int(t["total_tokens"]),
    }


def _meta(result: Result, base_path: str) -> dict[str, Any]:
    tr = result.trace
    return {
        "trace_id": tr.id,
        "trace_url": f"{base_path}/traces/{tr.id}",
        "method": tr.method,
        "pipeline": tr.pipeline,
        "stop_reason": tr.stop_reason,
        "calls": len(tr.calls),
        "wall_s": tr.wall_s,
        "cost_by_stage": tr.cost()["by_stage"],
    }


class QueryRun:
    """One engine run in its own task; deltas and (opt-in) events flow through a queue."""

    def __init__(self, state: ServerState, pipe: Any, messages: tuple[Message, ...], *, deltas: bool, events: bool) -> None:
        self.state = state
        self.pipe = pipe
        self.messages = messages
        self.trace_id = uuid.uuid4().hex
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.deltas = deltas
        self.events = events
        self.task: asyncio.Task[Result] | None = None
        self._getter: asyncio.Task[tuple[str, Any]] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._main())
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Result]) -> None:
        self.state.release()  # the in-flight slot taken for this query
        if not task.cancelled():
            task.exception()  # mark it retrieved: the reply reports it
        self.queue.put_nowait(("done", None))

    async def _delta(self, text: str) -> None:
        self.queue.put_nowait(("delta", text))

    async def _event(self, ev: dict[str, Any]) -> None:
        self.queue.put_nowait(("event", ev))

    async def _main(self) -> Result:
        eng = Engine(
            self.pipe,
            on_delta=self._delta if self.deltas else None,
            on_event=self._event if self.events else None,
        )  # per-endpoint limits live on the shared backend objects, so they hold across queries
        try:
            result = await eng.run(self.messages)
        except SmoaError as e:
            tr = e.trace
            if tr is not None:
                tr.id = self.trace_id
                await self.state.save_trace(tr)
                otel.record(tr)
            raise
        result.trace.id = self.trace_id
        await self.state.save_trace(result.trace)
        otel.record(result.trace)  # a no-op unless OpenTelemetry export is on (smoa.otel)
        return result

    async def next_item(self, wait_s: float | None) -> tuple[str, Any] | None:
        """The next queued item, or None after `wait_s` seconds (nothing is lost when none came)."""
        if self._getter is None:
            self._getter = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({self._getter}, timeout=wait_s)
        if not done:
            return None
        item = self._getter.result()
        self._getter = None
        return item

    def cancel(self) -> None:
        if self._getter is not None and not self._getter.done():
            self._getter.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def complete(state: ServerState, req: ChatRequest, pipe: Any, messages: tuple[Message, ...], base_path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    run = QueryRun(state, pipe, messages, deltas=False, events=False)
    headers = {TRACE_HEADER: run.trace_id, TRACE_URL_HEADER: f"{base_path}/traces/{run.trace_id}"}
    run.start()
    assert run.task is not None
    try:
        result = await asyncio.shield(run.task)
    except asyncio.CancelledError:
        run.cancel()
        raise
    except Exception as e:
        err = from_exception(e)
        _log_failure(e, err)
        err.headers.update(headers)
        raise err from None
    body = {
        "id": f"chatcmpl-{run.trace_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": result.answer}, "logprobs": None, "finish_reason": result.finish_reason}
        ],
        "usage": usage_of(result),
        "smoa": _meta(result, base_path),
    }
    return 200, body, headers


def _log_failure(e: BaseException, err: ApiError) -> None:
    if err.status >= 500 and err.code == "internal_error":
        log.error("query failed", exc_info=e)
    else:
        log.warning("query failed (%s): %s", err.status, err.message)


async def start_stream(
    state: ServerState, req: ChatRequest, pipe: Any, messages: tuple[Message, ...], base_path: str
) -> tuple[AsyncIterator[str], dict[str, str]]:
    """Run the query and wait for its first output; an error before it raises ApiError.

    Returns the SSE body iterator and the response headers.
    """
    events = bool(req.smoa and req.smoa.events)
    run = QueryRun(state, pipe, messages, deltas=True, events=events)
    headers = {TRACE_HEADER: run.trace_id, TRACE_URL_HEADER: f"{base_path}/traces/{run.trace_id}"}
    run.start()
    assert run.task is not None
    try:
        first = await run.next_item(state.options.stream_hold_s)
    except asyncio.CancelledError:
        run.cancel()
        raise
    if first is not None and first[0] == "done":
        exc = run.task.exception()
        if exc is not None:
            err = from_exception(exc)
            _log_failure(exc, err)
            err.headers.update(headers)
            raise err
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    return _stream_body(run, first, req.model, include_usage, base_path), headers


async def _stream_body(run: QueryRun, first: tuple[str, Any] | None, model: str, include_usage: bool, base_path: str) -> AsyncIterator[str]:
    cid = f"chatcmpl-{run.trace_id}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        c.update(extra)
        return c

    assert run.task is not None
    try:
        yield _sse(chunk({"role": "assistant", "content": ""}))
        item = first
        while True:
            if item is None:
                item = await run.next_item(10.0)
                if item is None:
                    yield ": smoa is still working\n\n"  # an SSE comment: clients ignore it
                    continue
            kind, val = item
            item = None
            if kind == "delta":
                yield _sse(chunk({"content": val}))
            elif kind == "event":
                yield _sse(chunk({}, smoa_event=val))
            elif kind == "done":
                break
        exc = run.task.exception()
        if exc is not None:
            err = from_exception(exc)
            _log_failure(exc, err)
            body = err.body()
            body["error"]["status"] = err.status
            yield _sse(body)
            yield "data: [DONE]\n\n"
            return
        result = run.task.result()
        yield _sse(chunk({}, result.finish_reason, smoa=_meta(result, base_path)))
        if include_usage:
            yield _sse({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None, "choices": [], "usage": usage_of(result),
            })
        yield "data: [DONE]\n\n"
    finally:
        run.cancel()  # the client went away: stop the mixture (a no-op when it finished)


def check_model(state: ServerState, name: str) -> None:
    if name in state.pipelines.available:
        return
    why = state.pipelines.broken.get(name)
    if why:
        raise ApiError(404, f"model {name!r} is not available on this server: {why}", "invalid_request_error", "model_not_found", "model")
    raise ApiError(
        404, f"model {name!r} does not exist: use one of {', '.join(state.pipelines.available)}",
        "invalid_request_error", "model_not_found", "model",
    )


def build_pipeline_for(state: ServerState, req: ChatRequest) -> Any:
    check_model(state, req.model)
    try:
        return state.pipelines.build(req.model, **overrides_of(req))
    except ConfigError as e:
        raise bad_request(str(e)) from None
