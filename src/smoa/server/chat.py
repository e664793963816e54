"""POST /v1/chat/completions: the request, one engine run, and the reply (whole or streamed)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .. import otel
from ..answerformat import AnswerFormat
from ..engine import Engine, Result
from ..redaction import redact_output
from ..types import BackendError, ConfigError, Message, SmoaError
from .errors import ApiError, bad_request, from_exception, shutting_down
from .request import ChatRequest, apply_request_settings, overrides_of, writes_answer
from .stops import StopCutter, cut
from .tools import ToolPlan, openai_message

if TYPE_CHECKING:
    from .state import ServerState

log = logging.getLogger("smoa.server")

TRACE_HEADER = "X-Smoa-Trace-Id"
TRACE_URL_HEADER = "X-Smoa-Trace-Url"


def usage_of(result_or_trace: Any) -> dict[str, Any]:
    """Tokens spent on this query (the trace's cost), and apart from them, in `smoa_cached`,
    the tokens of calls served from the response cache: spent by an earlier query, not this one.

    Not `prompt_tokens_details.cached_tokens`: OpenAI counts those inside prompt_tokens (a
    cheaper part of what was processed), while a cache hit here processed nothing at all.
    """
    trace = result_or_trace.trace if isinstance(result_or_trace, Result) else result_or_trace
    t = trace.cost()["total"]
    hits = [c for c in trace.calls if c.cached and not c.error]
    cp = sum(int(c.prompt_tokens) for c in hits)
    cc = sum(int(c.completion_tokens) for c in hits)
    return {
        "prompt_tokens": int(t["prompt_tokens"]),
        "completion_tokens": int(t["completion_tokens"]),
        "total_tokens": int(t["total_tokens"]),
        "smoa_cached": {"calls": len(hits), "prompt_tokens": cp, "completion_tokens": cc, "total_tokens": cp + cc},
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

    def __init__(
        self, state: ServerState, pipe: Any, messages: tuple[Message, ...], *, deltas: bool, events: bool,
        fmt: AnswerFormat | None = None, tools: ToolPlan | None = None,
    ) -> None:
        self.state = state
        self.tools = tools
        self.pipe = pipe
        self.fmt = fmt
        self.value: Any = None  # the checked JSON value of a structured answer
        self.messages = fmt.tell_proposers(messages) if fmt is not None else messages
        self.trace_id = uuid.uuid4().hex
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.deltas = deltas
        self.events = events
        self.task: asyncio.Task[Result] | None = None
        self._getter: asyncio.Task[tuple[str, Any]] | None = None

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.task = asyncio.create_task(self._main())
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Result]) -> None:
        self.state.release(time.monotonic() - self.t0)  # the in-flight slot taken for this query
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
            answer_schema=self.fmt.schema if self.fmt is not None else None,
        )
        if self.tools is not None:
            eng.answer_tools, eng.answer_tool_choice = self.tools.native()  # per-endpoint limits live on the shared backend objects, so they hold across queries
        try:
            result = await eng.run(self.messages)
            if self.fmt is not None:
                await self._structured(eng, result)
        except asyncio.CancelledError:
            # the client left, or the server is shutting down: keep what was done
            if eng.trace is not None:
                eng.trace.id = self.trace_id
                eng.trace.error = "cancelled: the client went away or the server shut down"
                eng.trace.wall_s = round(eng.trace.elapsed(), 6)
                try:  # synchronously: the loop may be closing, and an await would be cancelled too
                    self.state.store.save(eng.trace.to_dict(), "server")
                except Exception:  # saving is best effort while cancelling
                    pass
            raise
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

    async def _structured(self, eng: Engine, result: Result) -> None:
        """The answer as JSON that matches the schema: repaired once by its writer, else an error."""
        assert self.fmt is not None
        value, why = self.fmt.check(result.answer)
        trace = result.trace
        if why is not None:
            writer = self.pipe.proposers[0] if writes_answer(self.pipe.method) == "proposers" else self.pipe.aggregator
            layer = max((c.layer for c in trace.calls), default=0) + 1
            bad = result.answer
            try:
                rec = await eng.call(trace, writer, self.fmt.repair_messages(bad, why), "repair", layer, json_schema=self.fmt.schema)
                value, why2 = self.fmt.check(redact_output(rec.response))
            except BackendError as e:
                why2 = f"could not be repaired (the repair call failed: {e})"
            trace.finish["repair"] = {"call_id": trace.calls[-1].id, "why": why, "ok": why2 is None}
            if why2 is not None and trace.calls[-1].finish_reason == "length":
                why2 += " (the reply was cut at max_tokens: raise max_tokens)"
            if why2 is not None:
                trace.error = f"the answer is not valid JSON for the response_format after one repair: {why2}"
                trace.id = self.trace_id
                await self.state.save_trace(trace)
                raise ApiError(
                    502, f"the mixture's answer {why}, and after one repair it still {why2}: no valid JSON to send; "
                    "retry, or simplify the schema", "upstream_error", "invalid_structured_output", "response_format",
                )
        self.value = value
        result.answer = trace.answer = json.dumps(value, ensure_ascii=False)

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


def _sse_error(err: ApiError) -> str:
    """An error as the stream's last event: the OpenAI error body, with the status it would have had."""
    body = err.body()
    body["error"]["status"] = err.status
    return _sse(body)


async def complete(
    state: ServerState, req: ChatRequest, pipe: Any, messages: tuple[Message, ...], base_path: str,
    gone: asyncio.Future[None] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """The whole reply; None when the client left first (its mixture is cancelled)."""
    run = QueryRun(state, pipe, messages, deltas=False, events=False, fmt=req.answer_format, tools=req.tool_plan)
    headers = {TRACE_HEADER: run.trace_id, TRACE_URL_HEADER: f"{base_path}/traces/{run.trace_id}"}
    run.start()
    assert run.task is not None
    try:
        watched: set[asyncio.Future[Any]] = {run.task} if gone is None else {run.task, gone}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not run.task.done():
            run.cancel()
            return None
        result = run.task.result()
    except asyncio.CancelledError:
        run.cancel()
        raise
    except Exception as e:
        err = from_exception(e)
        _log_failure(e, err)
        err.headers.update(headers)
        raise err from None
    answer, was_cut = cut(result.answer, req.stops)
    finish = "stop" if was_cut else result.finish_reason
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if req.tool_plan is not None:
        message, finish = openai_message(run.value)
    body = {
        "id": f"chatcmpl-{run.trace_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
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
    state: ServerState, req: ChatRequest, pipe: Any, messages: tuple[Message, ...], base_path: str,
    gone: asyncio.Future[None] | None = None,
) -> tuple[AsyncIterator[str], dict[str, str]] | None:
    """Run the query and wait for its first output; an error before it raises ApiError.

    Returns the SSE body iterator and the response headers; None when the client left first.
    """
    events = bool(req.smoa and req.smoa.events)
    fmt = req.answer_format  # JSON is checked whole before any of it is sent: no deltas
    run = QueryRun(state, pipe, messages, deltas=fmt is None, events=events, fmt=fmt, tools=req.tool_plan)
    headers = {TRACE_HEADER: run.trace_id, TRACE_URL_HEADER: f"{base_path}/traces/{run.trace_id}"}
    run.start()
    assert run.task is not None
    try:
        waiting = asyncio.ensure_future(run.next_item(state.options.stream_hold_s))
        pending: set[asyncio.Future[Any]] = {waiting} if gone is None else {waiting, gone}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            run.cancel()
            return None
        first = waiting.result()
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
    body = _stream_body(run, first, req.model, include_usage, base_path, StopCutter(req.stops), req.tool_plan is not None)
    return body, headers


async def _stream_body(
    run: QueryRun, first: tuple[str, Any] | None, model: str, include_usage: bool, base_path: str, stops: StopCutter,
    tools: bool = False,
) -> AsyncIterator[str]:
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
                out = stops.feed(val)
                if out:
                    yield _sse(chunk({"content": out}))
            elif kind == "event":
                yield _sse(chunk({}, smoa_event=val))
            elif kind == "done":
                break
        exc = run.task.exception()
        if exc is not None:
            err = from_exception(exc)
            _log_failure(exc, err)
            yield _sse_error(err)
            yield "data: [DONE]\n\n"
            return
        result = run.task.result()
        rest = stops.flush() if not run.fmt else result.answer
        finish = "stop" if stops.stopped else result.finish_reason
        if tools:
            message, finish = openai_message(run.value)
            rest = message["content"] or ""
            if message.get("tool_calls"):
                calls = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
                yield _sse(chunk({"tool_calls": calls}))
        if rest:
            yield _sse(chunk({"content": rest}))
        yield _sse(chunk({}, finish, smoa=_meta(result, base_path)))
        if include_usage:
            yield _sse({
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None, "choices": [], "usage": usage_of(result),
            })
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        # the server is shutting down past its grace period (or the client left, and then
        # nobody reads this): the query is cancelled and its partial trace saved; say so and
        # end the stream (routes.EventStream logs the one line)
        yield _sse_error(shutting_down())
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
        return apply_request_settings(state.pipelines.build(req.model, **overrides_of(req)), req)
    except ConfigError as e:
        raise bad_request(str(e)) from None
