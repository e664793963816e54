"""The server exports each chat completion's trace as OpenTelemetry spans (smoa.otel)."""

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install -e '.[otel]'")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from smoa import otel  # noqa: E402
from smoa.testing import ScriptedBackend  # noqa: E402
from smoa.types import BackendError  # noqa: E402

CONFIG = """
[pipelines.tiny]
method = "smoa"
n = 3
k = 2
max_rounds = 2
"""


@pytest.fixture
def spans():
    exp = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exp))
    otel.instrument(tracer_provider=tp)
    yield exp
    otel.uninstrument()


@pytest.mark.parametrize("stream", [False, True])
def test_each_completion_is_one_query_span_named_by_its_trace(make_server, spans, stream):
    srv = make_server(config_text=CONFIG)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 12 * 7?"}], "seed": 3, "stream": stream}
    r = httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    trace_id = r.headers["x-smoa-trace-id"]
    got = spans.get_finished_spans()
    roots = [s for s in got if s.parent is None]
    assert len(roots) == 1 and roots[0].name == "invoke_workflow tiny"
    assert roots[0].attributes["smoa.trace_id"] == trace_id and roots[0].attributes["smoa.method"] == "smoa"
    kids = [s for s in got if s.parent is not None]
    stages = [s.attributes["smoa.stage"] for s in sorted(kids, key=lambda s: s.attributes["smoa.call_id"])]
    assert stages[0] == "role" and stages[-1] == "aggregate" and stages.count("judge") == 2
    assert all(s.parent.span_id == roots[0].context.span_id for s in kids)


def test_a_failed_query_is_exported_with_its_error(make_server, spans):
    be = ScriptedBackend(responder=lambda req: (_ for _ in ()).throw(BackendError("upstream down")))
    srv = make_server(backend=be, config_text=CONFIG)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=30)
    assert r.status_code >= 500
    roots = [s for s in spans.get_finished_spans() if s.parent is None]
    assert len(roots) == 1 and roots[0].status.status_code == StatusCode.ERROR
    assert roots[0].attributes["smoa.trace_id"] == r.headers["x-smoa-trace-id"]
    assert "every proposer failed" in roots[0].attributes["smoa.error"]
