"""OpenTelemetry export: smoa's traces as spans, following the GenAI semantic conventions.

One span per query (`invoke_workflow <pipeline>`) and under it one span per LLM call
(`chat <model>`), made from the finished `Trace` with the trace's own start times and
durations, so the spans show what happened and when, without touching the engine's loop.
Attributes are the GenAI conventions' (`gen_ai.*`, keys taken from the installed
`opentelemetry-semantic-conventions` package) and `smoa.*` for what they do not cover:
stage, layer, agent, role, the judge's selection and the moderator's stop decision.

Prompts and completions are not exported unless asked for (`capture_content=True`,
`SMOA_OTEL_CONTENT=1`, or the conventions' own
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`), and then with secrets masked
(smoa.redaction).

Turning it on:
- Python: `smoa.otel.instrument()` (or `instrument(tracer_provider=...)` to use your own).
- CLI and server: `--otel` on `smoa ask`, `smoa eval` and `smoa serve`, or `SMOA_OTEL=1`,
  or just the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
  (`SMOA_OTEL=0` or `OTEL_SDK_DISABLED=true` turn it off). `OTEL_SERVICE_NAME`,
  `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS` are read by the SDK as usual.
  Ray workers of `smoa eval --executor ray` get these settings (not the headers) and export
  their items' spans themselves.

The mapping is our own code: the OpenTelemetry GenAI instrumentations wrap one provider's
client call by call, while smoa's spans must carry its mixture's structure (stages, layers,
verdicts), which only the trace knows. Spans go out through the OTel SDK and its OTLP/HTTP
exporter (the `otel` extra); OpenTelemetry is imported only when export is on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from .redaction import redact, register_secret, register_url
from .types import SmoaError

if TYPE_CHECKING:
    from .trace import CallRecord, Trace

log = logging.getLogger("smoa.otel")

EXTRA_HINT = "pip install 'smoa[otel]'"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# backend kinds as gen_ai.provider.name values (the conventions' value where one exists)
_PROVIDERS = {"openai": "openai", "local": "llama_cpp"}


class _State:
    def __init__(self, tracer: Any, provider: Any, own: bool, capture_content: bool) -> None:
        self.tracer = tracer
        self.provider = provider  # the TracerProvider, to flush
        self.own = own  # we made it (and so shut it down)
        self.capture_content = capture_content


_state: _State | None = None
_lock = threading.Lock()
_warned = False


# -- switching on -------------------------------------------------------------
def wanted() -> bool:
    """Whether the environment asks for export: SMOA_OTEL, else an OTLP endpoint variable."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    flag = os.environ.get("SMOA_OTEL")
    if flag is not None and flag.strip().lower() in _TRUE | _FALSE:
        return flag.strip().lower() in _TRUE
    if flag is not None:
        raise SmoaError(f"SMOA_OTEL={flag!r} is not understood: use 1 to export traces or 0 not to")
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def available() -> bool:
    """Whether the `otel` extra (the OTel SDK and its OTLP/HTTP exporter) is installed."""
    import importlib.util

    try:
        return all(
            importlib.util.find_spec(m) is not None
            for m in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                      "opentelemetry.semconv")
        )
    except ModuleNotFoundError:
        return False


def require() -> None:
    """Raise one clear error when export was asked for but the extra is missing."""
    if not available():
        raise SmoaError(f"OpenTelemetry export needs the otel extra, which is not installed: {EXTRA_HINT}")


def capture_content_wanted() -> bool:
    for var in ("SMOA_OTEL_CONTENT", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    return False


def instrument(
    *,
    tracer_provider: Any | None = None,
    endpoint: str | None = None,
    headers: dict[str, str] | None = None,
    service_name: str | None = None,
    capture_content: bool | None = None,
) -> Any:
    """Export every query smoa finishes from now on as OpenTelemetry spans; returns the
    TracerProvider used.

    tracer_provider: yours (e.g. Phoenix's `register()`); default: the global one if an SDK
    provider was set, else a new one sending OTLP/HTTP to `endpoint` (the full traces URL,
    e.g. "http://localhost:4318/v1/traces"; default: the OTEL_EXPORTER_OTLP_* variables, or
    localhost:4318). capture_content: export prompts and completions (secrets masked).
    """
    global _state
    require()
    from opentelemetry import trace as trace_api

    from . import __version__

    own = False
    if tracer_provider is None:
        current = trace_api.get_tracer_provider()
        if endpoint is None and headers is None and hasattr(current, "add_span_processor"):
            tracer_provider = current  # an SDK provider the application set up: join it
        else:
            tracer_provider = _new_provider(endpoint, headers, service_name)
            own = True
    tracer = tracer_provider.get_tracer("smoa", __version__)
    content = capture_content_wanted() if capture_content is None else capture_content
    with _lock:
        old, _state = _state, _State(tracer, tracer_provider, own, content)
    if old is not None and old.own and old.provider is not tracer_provider:
        old.provider.shutdown()
    return tracer_provider


def _new_provider(endpoint: str | None, headers: dict[str, str] | None, service_name: str | None) -> Any:
    from urllib.parse import unquote

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # the exporter's credentials (Langfuse's Basic auth, an API key) are secrets of this
    # process: masked wherever smoa writes, like the backends' keys
    pairs = [p.split("=", 1) for var in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
             for p in os.environ.get(var, "").split(",") if "=" in p]
    for name, value in [*pairs, *(headers or {}).items()]:
        if any(w in name.lower() for w in ("auth", "key", "token", "secret")):
            value = unquote(value).strip()
            register_secret(value)
            register_secret(value.split(" ", 1)[-1])  # "Basic <token>": the token alone too
    for url in (endpoint, os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"), os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        register_url(url)
    attrs = {}
    if service_name or not os.environ.get("OTEL_SERVICE_NAME"):
        attrs[SERVICE_NAME] = service_name or "smoa"  # OTEL_SERVICE_NAME wins over our default
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers)))
    return provider


def uninstrument() -> None:
    """Stop exporting (flushing and shutting down a provider smoa made)."""
    global _state
    with _lock:
        old, _state = _state, None
    if old is not None and old.own:
        old.provider.shutdown()


def flush(timeout_ms: int = 10_000) -> bool:
    """Send the spans still queued (True when done within the time)."""
    st = _state
    if st is None or not hasattr(st.provider, "force_flush"):
        return True
    return bool(st.provider.force_flush(timeout_ms))


def setup_from_env() -> bool:
    """At a CLI or server entry point: instrument if the environment asks, with one clear
    error if it asks and the extra is missing. True when export is on."""
    if _state is not None:
        return True
    if not wanted():
        return False
    instrument()
    return True


def cli_setup(flag: bool) -> bool:
    """For `--otel` on a command: turn export on (in the environment too, so that worker
    processes, e.g. Ray's, export as well) or follow the environment. Raises SmoaError with
    one clear line when export is asked for and the extra is missing."""
    if flag:
        os.environ["SMOA_OTEL"] = "1"
    return setup_from_env()


# -- exporting ----------------------------------------------------------------
def record(trace: Trace, attributes: dict[str, Any] | None = None) -> None:
    """Export a finished query's trace if export is on (never raises: a tracing failure
    must not fail a query). Called where queries finish: `smoa.run`, the CLI, the eval
    runner and the server."""
    global _warned
    st = _state
    if st is None:
        try:
            if not wanted():
                return
            if not available():
                if not _warned:
                    _warned = True
                    log.warning("OpenTelemetry export is on in the environment but the otel extra "
                                "is not installed: %s (traces are not exported)", EXTRA_HINT)
                return
            instrument()
        except Exception as e:  # a tracing failure must not fail a query
            log.warning("OpenTelemetry export could not start: %s", redact(str(e)))
            return
        st = _state
        if st is None:
            return
    try:
        export_trace(trace, st.tracer, capture_content=st.capture_content, attributes=attributes)
    except Exception as e:
        log.warning("could not export trace %s to OpenTelemetry: %s", trace.id, redact(f"{type(e).__name__}: {e}"))


def export_trace(
    trace: Trace,
    tracer: Any,
    *,
    capture_content: bool = False,
    attributes: dict[str, Any] | None = None,
    context: Any | None = None,
) -> Any:
    """Make the spans of one trace with `tracer`: the query span (a child of `context`, or of
    the current span) and one child per call. Returns the query span."""
    from opentelemetry import trace as trace_api
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
    from opentelemetry.semconv.attributes import error_attributes as ea
    from opentelemetry.trace import SpanKind, Status, StatusCode

    t0 = trace.created_at
    ends = [t0 + c.started_at + c.latency_s for c in trace.calls]
    q_end = t0 + trace.wall_s if trace.wall_s > 0 else max(ends, default=t0)
    cost = trace.cost()["total"]
    name = trace.pipeline or trace.method
    q_attrs: dict[str, Any] = {
        ga.GEN_AI_OPERATION_NAME: "invoke_workflow",
        ga.GEN_AI_WORKFLOW_NAME: name,
        "smoa.trace_id": trace.id,
        "smoa.method": trace.method,
        "smoa.pipeline": trace.pipeline,
        "smoa.stop_reason": trace.stop_reason,
        "smoa.finish": str(trace.finish.get("kind", "")),
        "smoa.layers": len(trace.layers),
        "smoa.calls": len(trace.calls),
        "smoa.answer.length": len(trace.answer),
        # totals under smoa.*: gen_ai.usage on the parent would count every token twice in
        # tools that add up usage over the spans of a trace
        "smoa.usage.input_tokens": cost["prompt_tokens"],
        "smoa.usage.output_tokens": cost["completion_tokens"],
        "smoa.failed_calls": cost["errors"],
        "smoa.cached_calls": cost["cached"],
        "smoa.degraded": bool(trace.health()["degraded"]),
    }
    for key in ("n", "k", "max_rounds", "seed"):
        if trace.config.get(key) is not None:
            q_attrs[f"smoa.{key}"] = trace.config[key]
    if trace.config.get("roles_source"):
        q_attrs["smoa.roles_source"] = trace.config["roles_source"]
    if capture_content:
        _put_messages(q_attrs, trace.query, ga)
        q_attrs[ga.GEN_AI_OUTPUT_MESSAGES] = _output_json(trace.answer, None)
    q_attrs.update(attributes or {})
    if trace.error:
        q_attrs["smoa.error"] = redact(trace.error)
        q_attrs[ea.ERROR_TYPE] = "SmoaError"
    span = tracer.start_span(
        f"invoke_workflow {name}", context=context, kind=SpanKind.INTERNAL,
        attributes=_clean(q_attrs), start_time=_ns(t0),
    )
    for lay in trace.layers:
        at = max((e for c, e in zip(trace.calls, ends, strict=True) if c.layer == lay.get("layer")), default=q_end)
        span.add_event("smoa.layer", attributes=_clean(_layer_attrs(lay)), timestamp=_ns(at))
    if trace.error:
        span.set_status(Status(StatusCode.ERROR, redact(trace.error)[:500]))
    ctx = trace_api.set_span_in_context(span)
    proposer = {p.get("call_id"): p.get("index") for lay in trace.layers for p in lay.get("proposals", [])}
    # call id -> its decisions: a combined verdict is one call that both judged and moderated
    verdicts: dict[Any, list[tuple[str, dict[str, Any]]]] = {}
    for lay in trace.layers:
        for stage in ("judge", "moderator"):
            if isinstance(info := lay.get(stage), dict) and info.get("call_id") is not None:
                verdicts.setdefault(info["call_id"], []).append((stage, info))
    for c in trace.calls:
        attrs = _call_attrs(c, ga, capture_content)
        if c.id in proposer:
            attrs["smoa.proposer"] = proposer[c.id]
        for stage, info in verdicts.get(c.id, ()):
            attrs.update(_verdict_attrs(stage, info, capture_content))
        if trace.finish.get("call_id") == c.id and c.stage == "aggregate":
            attrs["smoa.aggregate.inputs"] = list(trace.finish.get("inputs", []))
        if c.error:
            attrs[ea.ERROR_TYPE] = "cancelled" if c.error == "cancelled" else "BackendError"
            attrs["smoa.error"] = redact(c.error)
        start = t0 + c.started_at
        child = tracer.start_span(
            f"chat {c.model}", context=ctx, kind=SpanKind.CLIENT, attributes=_clean(attrs), start_time=_ns(start),
        )
        if c.error:
            child.set_status(Status(StatusCode.ERROR, redact(c.error)[:500]))
        child.end(end_time=_ns(start + c.latency_s))
    span.end(end_time=_ns(q_end))
    return span


def _call_attrs(c: CallRecord, ga: Any, capture_content: bool) -> dict[str, Any]:
    provider = _PROVIDERS.get(c.provider, c.provider or c.backend)
    s = c.settings or {}
    a: dict[str, Any] = {
        ga.GEN_AI_OPERATION_NAME: "chat",
        ga.GEN_AI_PROVIDER_NAME: provider,
        ga.GEN_AI_SYSTEM: provider,  # the older name, still read by several tools
        ga.GEN_AI_REQUEST_MODEL: c.model,
        ga.GEN_AI_USAGE_INPUT_TOKENS: c.prompt_tokens,
        ga.GEN_AI_USAGE_OUTPUT_TOKENS: c.completion_tokens,
        "smoa.call_id": c.id,
        "smoa.stage": c.stage,
        "smoa.layer": c.layer,
        "smoa.agent": c.agent,
        "smoa.backend": c.backend,
        "smoa.latency_s": c.latency_s,
        "smoa.cached": c.cached,
        "smoa.attempts": c.attempts,
    }
    if not c.error:
        a[ga.GEN_AI_RESPONSE_MODEL] = c.response_model or c.model
    if c.finish_reason:
        a[ga.GEN_AI_RESPONSE_FINISH_REASONS] = [c.finish_reason]
    for key, attr in (("temperature", ga.GEN_AI_REQUEST_TEMPERATURE), ("max_tokens", ga.GEN_AI_REQUEST_MAX_TOKENS),
                      ("top_p", ga.GEN_AI_REQUEST_TOP_P), ("seed", ga.GEN_AI_REQUEST_SEED)):
        if s.get(key) is not None:
            a[attr] = s[key]
    if c.role:
        a["smoa.role"] = redact(c.role)
    if c.attempt_errors:
        a["smoa.attempt_errors"] = [redact(e) for e in c.attempt_errors]
    if c.fallback:
        a["smoa.fallback_agent"] = c.fallback
    if capture_content:
        _put_messages(a, c.messages, ga)
        if not c.error:
            a[ga.GEN_AI_OUTPUT_MESSAGES] = _output_json(c.response, c.finish_reason)
    return a


def _verdict_attrs(stage: str, info: dict[str, Any], capture_content: bool) -> dict[str, Any]:
    a: dict[str, Any] = {}
    if stage == "judge":
        a["smoa.judge.kept"] = list(info.get("kept", []))
        a["smoa.judge.k"] = info.get("k")
        a["smoa.judge.candidates"] = list(info.get("candidates", []))
        a["smoa.judge.shown_order"] = list(info.get("shown_order", []))
        if info.get("fallback"):
            a["smoa.judge.fallback"] = str(info["fallback"])
    else:
        a["smoa.moderator.stop"] = bool(info.get("stop"))
        if info.get("fallback"):
            a["smoa.moderator.fallback"] = str(info["fallback"])
    if capture_content and info.get("reasoning"):
        a[f"smoa.{stage}.reasoning"] = redact(str(info["reasoning"]))
    return a


def _layer_attrs(lay: dict[str, Any]) -> dict[str, Any]:
    props = lay.get("proposals", [])
    a: dict[str, Any] = {
        "smoa.layer": lay.get("layer"),
        "smoa.layer.proposals": len(props),
        "smoa.layer.failed": list(lay.get("failed", [])),
        "smoa.layer.kept": list(lay.get("kept", [])),
        "smoa.layer.dropped": list(lay.get("dropped", [])),
    }
    j = lay.get("judge")
    if isinstance(j, dict):
        a["smoa.judge.called"] = j.get("call_id") is not None
        a["smoa.judge.kept"] = list(j.get("kept", []))
        if j.get("fallback"):
            a["smoa.judge.fallback"] = str(j["fallback"])
        if j.get("error"):
            a["smoa.judge.error"] = redact(str(j["error"]))
    m = lay.get("moderator")
    if isinstance(m, dict):
        a["smoa.moderator.stop"] = bool(m.get("stop"))
        if m.get("fallback"):
            a["smoa.moderator.fallback"] = str(m["fallback"])
    return a


def _put_messages(a: dict[str, Any], messages: list[dict[str, str]], ga: Any) -> None:
    """The conventions' shape: system prompts apart, the rest as role + text parts (JSON)."""
    system = [{"type": "text", "content": redact(m.get("content", ""))} for m in messages if m.get("role") == "system"]
    rest = [
        {"role": m.get("role", "user"), "parts": [{"type": "text", "content": redact(m.get("content", ""))}]}
        for m in messages if m.get("role") != "system"
    ]
    if system:
        a[ga.GEN_AI_SYSTEM_INSTRUCTIONS] = json.dumps(system, ensure_ascii=False)
    a[ga.GEN_AI_INPUT_MESSAGES] = json.dumps(rest, ensure_ascii=False)


def _output_json(text: str, finish_reason: str | None) -> str:
    msg: dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": redact(text)}]}
    msg["finish_reason"] = finish_reason or "stop"
    return json.dumps([msg], ensure_ascii=False)


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """OTel attribute values are primitives or lists of one primitive type: drop the rest."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, list):
            v = [x for x in v if x is not None]
            if v and len({type(x) for x in v}) > 1:
                v = [str(x) for x in v]
        elif not isinstance(v, str | bool | int | float):
            v = str(v)
        out[k] = v
    return out


def _ns(t: float) -> int:
    return int(t * 1e9)
