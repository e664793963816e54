"""OpenTelemetry export (smoa.otel): the span tree of scripted queries, read back from the SDK's
in-memory exporter, and once the same spans as a real OTLP/HTTP receiver on 127.0.0.1 gets them."""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install -e '.[otel]'")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from smoa import SmoaError, otel, redaction, run_sync  # noqa: E402
from smoa.testing import ScriptedBackend, ServerProcess, mixture_responder  # noqa: E402
from smoa.types import BackendError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def distinct(req):  # every proposer answers differently, so the judge is really called
    return f"answer from seed {req.settings.seed}"


@pytest.fixture
def spans():
    exp = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exp))
    otel.instrument(tracer_provider=tp)
    yield exp
    otel.uninstrument()


def smoa_query(propose=distinct, q="What is 2+2?", method="smoa", **kw):
    be = ScriptedBackend(responder=mixture_responder(propose=propose))
    kw = {"n": 3, "k": 2, "max_rounds": 2, "seed": 1, **kw}
    return run_sync(q, method, backends={"local": be}, **kw)


def split(exp):
    got = exp.get_finished_spans()
    roots = [s for s in got if s.parent is None]
    assert len(roots) == 1, [s.name for s in got]
    kids = sorted((s for s in got if s.parent is not None), key=lambda s: s.attributes["smoa.call_id"])
    return roots[0], kids


def test_span_tree_of_a_scripted_smoa_query(spans):
    # smoa-moderator: every kind of call span, the moderator's included
    r = smoa_query(method="smoa-moderator")
    tr = r.trace
    root, kids = split(spans)
    # one query span, one child per call, all in one trace, in the trace's order
    assert root.name == "invoke_workflow smoa-moderator" and root.kind == SpanKind.INTERNAL
    assert len(kids) == len(tr.calls) == 11
    assert all(k.parent.span_id == root.context.span_id and k.context.trace_id == root.context.trace_id for k in kids)
    assert [(k.attributes["smoa.stage"], k.attributes["smoa.layer"]) for k in kids] == (
        [("role", 0)] + [("propose", 1)] * 3 + [("judge", 1), ("moderate", 1)]
        + [("propose", 2)] * 3 + [("judge", 2), ("aggregate", 3)]
    )
    # the query span
    a = root.attributes
    assert a[ga.GEN_AI_OPERATION_NAME] == "invoke_workflow" and a[ga.GEN_AI_WORKFLOW_NAME] == "smoa-moderator"
    assert a["smoa.trace_id"] == tr.id and a["smoa.method"] == "smoa-moderator" and a["smoa.pipeline"] == tr.pipeline
    assert a["smoa.stop_reason"] == tr.stop_reason and a["smoa.finish"] == "aggregate"
    assert a["smoa.answer.length"] == len(r.answer) and a["smoa.calls"] == 11 and a["smoa.layers"] == 2
    cost = tr.cost()["total"]
    assert a["smoa.usage.input_tokens"] == cost["prompt_tokens"] and a["smoa.usage.output_tokens"] == cost["completion_tokens"]
    assert a["smoa.n"] == 3 and a["smoa.k"] == 2 and root.status.status_code == StatusCode.UNSET
    assert [e.attributes["smoa.layer"] for e in root.events] == [1, 2]
    assert list(root.events[0].attributes["smoa.layer.kept"]) == tr.layers[0]["kept"]
    # every call span: GenAI attributes and smoa's, equal to the trace's record
    for k, c in zip(kids, tr.calls, strict=True):
        a = k.attributes
        assert k.name == f"chat {c.model}" and k.kind == SpanKind.CLIENT
        assert a[ga.GEN_AI_OPERATION_NAME] == "chat"
        assert a[ga.GEN_AI_PROVIDER_NAME] == a[ga.GEN_AI_SYSTEM] == "scripted"
        assert a[ga.GEN_AI_REQUEST_MODEL] == c.model and a[ga.GEN_AI_RESPONSE_MODEL] == c.model
        assert a[ga.GEN_AI_USAGE_INPUT_TOKENS] == c.prompt_tokens > 0
        assert a[ga.GEN_AI_USAGE_OUTPUT_TOKENS] == c.completion_tokens > 0
        assert a[ga.GEN_AI_REQUEST_TEMPERATURE] == c.settings["temperature"]
        assert a[ga.GEN_AI_REQUEST_MAX_TOKENS] == c.settings["max_tokens"]
        assert list(a[ga.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop"]
        assert a["smoa.agent"] == c.agent and a["smoa.backend"] == "local" and a["smoa.cached"] is False
        assert a["smoa.latency_s"] == c.latency_s
        # real times: the trace's start plus the call's offset, and its latency
        start = int((tr.created_at + c.started_at) * 1e9)
        assert abs(k.start_time - start) <= 1000
        assert abs((k.end_time - k.start_time) - c.latency_s * 1e9) <= 1000
        assert root.start_time <= k.start_time and k.end_time <= root.end_time
        # contents are off by default
        assert not any(key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system_instructions")) for key in a)
    assert abs((root.end_time - root.start_time) - tr.wall_s * 1e9) <= 1000
    props = [k for k in kids if k.attributes["smoa.stage"] == "propose"]
    assert [k.attributes["smoa.proposer"] for k in props] == [0, 1, 2, 0, 1, 2]
    assert props[0].attributes["smoa.role"] == tr.roles[0]
    assert [k.attributes[ga.GEN_AI_REQUEST_SEED] for k in props[:3]] == [1, 2, 3]
    # the judge's and the moderator's decisions
    judges = [k for k in kids if k.attributes["smoa.stage"] == "judge"]
    for j, lay in zip(judges, tr.layers, strict=True):
        assert list(j.attributes["smoa.judge.kept"]) == lay["judge"]["kept"] == lay["kept"]
        assert list(j.attributes["smoa.judge.shown_order"]) == lay["judge"]["shown_order"]
        assert j.attributes["smoa.judge.k"] == 2
    mod = next(k for k in kids if k.attributes["smoa.stage"] == "moderate")
    assert mod.attributes["smoa.moderator.stop"] is tr.layers[0]["moderator"]["stop"]
    agg = kids[-1]
    assert list(agg.attributes["smoa.aggregate.inputs"]) == tr.finish["inputs"]


def test_moderator_stop_and_judge_skipped_are_recorded(spans):
    # identical proposals: the judge is not called; the moderator stops after layer 1
    def moderate(req):
        return json.dumps({"reasoning": "they agree", "stop": True})

    be = ScriptedBackend(responder=mixture_responder(propose=lambda r: "4", moderate=moderate))
    r = run_sync("2+2?", "smoa-moderator", backends={"local": be}, n=3, k=2, max_rounds=3, seed=1)
    root, kids = split(spans)
    assert r.trace.stop_reason == "moderator" and root.attributes["smoa.stop_reason"] == "moderator"
    assert [k.attributes["smoa.stage"] for k in kids] == ["role", "propose", "propose", "propose", "moderate", "aggregate"]
    assert kids[4].attributes["smoa.moderator.stop"] is True
    ev = root.events[0].attributes
    assert ev["smoa.judge.called"] is False and ev["smoa.moderator.stop"] is True


def test_failed_call_and_failed_query_carry_errors(spans):
    def flaky(req):
        if req.settings.seed == 2:
            raise BackendError("endpoint said 500")
        return distinct(req)

    smoa_query(propose=flaky, max_rounds=1)
    root, kids = split(spans)
    failed = [k for k in kids if k.status.status_code == StatusCode.ERROR]
    assert failed and all(k.attributes["smoa.stage"] == "propose" and k.attributes["smoa.proposer"] == 1 for k in failed)
    assert failed[0].attributes["error.type"] == "BackendError" and "500" in failed[0].attributes["smoa.error"]
    assert root.status.status_code == StatusCode.UNSET
    assert list(root.events[0].attributes["smoa.layer.failed"]) == [1]
    spans.clear()

    def down(req):
        raise BackendError("connection refused")

    with pytest.raises(SmoaError, match="every proposer failed"):
        smoa_query(propose=down, max_rounds=1)
    root, kids = split(spans)  # a failed query is exported too
    assert root.status.status_code == StatusCode.ERROR and "every proposer failed" in root.attributes["smoa.error"]
    assert root.attributes["error.type"] == "SmoaError"
    assert {k.attributes["smoa.stage"] for k in kids if k.status.status_code == StatusCode.ERROR} == {"propose"}


def test_contents_are_opt_in_and_secrets_masked(spans):
    secret = "sk-otel-test-0123456789abcdef"
    redaction.register_secret(secret)
    otel.instrument(tracer_provider=otel._state.provider, capture_content=True)
    r = smoa_query(q=f"my key is {secret}; what is 2+2?", max_rounds=1)
    root, kids = split(spans)
    everything = json.dumps([dict(s.attributes) for s in [root, *kids]])
    assert secret not in everything and secret[:12] not in everything and "[redacted]" in everything
    inp = json.loads(root.attributes[ga.GEN_AI_INPUT_MESSAGES])
    assert inp[0]["role"] == "user" and "what is 2+2?" in inp[0]["parts"][0]["content"]
    out = json.loads(root.attributes[ga.GEN_AI_OUTPUT_MESSAGES])
    assert out[0]["parts"][0]["content"] == r.answer
    prop = next(k for k in kids if k.attributes["smoa.stage"] == "propose")
    assert json.loads(prop.attributes[ga.GEN_AI_SYSTEM_INSTRUCTIONS])[0]["content"] == r.trace.roles[0]
    assert json.loads(prop.attributes[ga.GEN_AI_OUTPUT_MESSAGES])[0]["finish_reason"] == "stop"


def test_environment_switches(monkeypatch):
    assert not otel.wanted()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert otel.wanted()
    monkeypatch.setenv("SMOA_OTEL", "0")
    assert not otel.wanted()
    monkeypatch.setenv("SMOA_OTEL", "1")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not otel.wanted()
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("SMOA_OTEL", "maybe")
    with pytest.raises(SmoaError, match="SMOA_OTEL='maybe'"):
        otel.wanted()


def test_eval_rows_export_their_traces_with_the_score(spans, tmp_path):
    from smoa.eval.runner import run_eval

    data = Path(os.environ.get("SMOA_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (data / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {data}")
    be = ScriptedBackend(responder=mixture_responder(propose=lambda r: "#### 18"))
    run_eval("gsm8k", "single", data=data, limit=2, out=tmp_path, backends={"local": be}, progress=False)
    got = [s for s in spans.get_finished_spans() if s.parent is None]
    assert len(got) == 2
    for s in got:
        a = s.attributes
        assert a["smoa.eval.benchmark"] == "gsm8k" and a["smoa.eval.method"] == "single"
        assert a["smoa.eval.correct"] in (True, False) and a["smoa.eval.score"] in (0.0, 1.0)
    assert len({s.attributes["smoa.eval.item_id"] for s in got}) == 2


# ---------------------------------------------------------------------------
# a real OTLP/HTTP receiver on 127.0.0.1


class Receiver:
    """Accepts POST /v1/traces (OTLP protobuf) and keeps the decoded spans."""

    def __init__(self):
        self.requests = []
        self.paths = []
        self.auth = []
        got = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got.paths.append((self.path, self.headers.get("Content-Type")))
                got.auth.append(self.headers.get("Authorization"))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                got.requests.append(req)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        out = []
        for req in self.requests:
            for rs in req.resource_spans:
                res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append((res, ss.scope.name, s, {kv.key: _value(kv.value) for kv in s.attributes}))
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_spans_reach_a_real_otlp_http_receiver(receiver):
    token = "otel-test-token-0123456789"
    otel.instrument(endpoint=receiver.url + "/v1/traces", service_name="smoa-test", headers={"Authorization": f"Bearer {token}"})
    masked = redaction.redact(f"header was {token}")  # the exporter's credential is a secret of the process
    assert token[:8] not in masked and "[redacted]" in masked
    r = smoa_query()  # smoa: role, 3 + 3 proposers, a judge per layer, the aggregator
    assert otel.flush(10_000)
    assert receiver.paths and all(p == ("/v1/traces", "application/x-protobuf") for p in receiver.paths)
    assert set(receiver.auth) == {f"Bearer {token}"}
    got = receiver.spans()
    assert len(got) == len(r.trace.calls) + 1 == 11
    assert {res["service.name"] for res, *_ in got} == {"smoa-test"} and {scope for _, scope, *_ in got} == {"smoa"}
    root = [(s, a) for _, _, s, a in got if not s.parent_span_id]
    assert len(root) == 1
    rs, ra = root[0]
    assert rs.name == "invoke_workflow smoa" and ra["smoa.trace_id"] == r.trace.id
    kids = sorted(((s, a) for _, _, s, a in got if s.parent_span_id), key=lambda x: x[1]["smoa.call_id"])
    assert all(s.parent_span_id == rs.span_id and s.trace_id == rs.trace_id for s, _ in kids)
    for (s, a), c in zip(kids, r.trace.calls, strict=True):
        assert s.name == f"chat {c.model}"
        assert a["gen_ai.operation.name"] == "chat" and a["smoa.stage"] == c.stage and a["smoa.layer"] == c.layer
        assert a["gen_ai.usage.input_tokens"] == c.prompt_tokens and a["gen_ai.usage.output_tokens"] == c.completion_tokens
        assert s.start_time_unix_nano == pytest.approx((r.trace.created_at + c.started_at) * 1e9, abs=1000)
    judge = next(a for _, a in kids if a["smoa.stage"] == "judge")
    assert judge["smoa.judge.kept"] == r.trace.layers[0]["kept"]
    # smoa's judge also decided the stop: the one span carries both decisions
    assert judge["smoa.moderator.stop"] is r.trace.layers[0]["moderator"]["stop"] is False


def test_smoa_ask_otel_exports_to_the_standard_endpoint(receiver, tmp_path):
    """The CLI as a user runs it: `smoa ask --otel` with OTEL_EXPORTER_OTLP_ENDPOINT."""
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as fake:
        cfg = tmp_path / "smoa.toml"
        cfg.write_text(
            f'[backends.fake]\ntype = "openai"\nbase_url = "{fake.base_url}"\n\n'
            '[pipelines.mix]\nmethod = "moa"\nn = 2\nmax_rounds = 1\nagent = { backend = "fake", model = "m1" }\n'
        )
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "smoa-cli",
               "PYTHONPATH": str(REPO / "src")}
        r = subprocess.run([sys.executable, "-m", "smoa", "ask", "--otel", "hi", "-c", str(cfg), "--json"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    trace_id = json.loads(r.stdout)["trace"]["id"]
    got = receiver.spans()
    names = sorted(s.name for _, _, s, _ in got)
    assert names == ["chat m1", "chat m1", "chat m1", "invoke_workflow mix"]
    assert {res["service.name"] for res, *_ in got} == {"smoa-cli"}
    root = next(a for _, _, s, a in got if not s.parent_span_id)
    assert root["smoa.trace_id"] == trace_id and root["smoa.method"] == "moa"
    calls = [a for _, _, s, a in got if s.parent_span_id]
    assert all(a["gen_ai.provider.name"] == "openai" and a["gen_ai.usage.input_tokens"] > 0 for a in calls)


def test_otel_without_the_extra_is_one_clear_line(tmp_path):
    """smoa runs without OpenTelemetry; asking for export without the extra says which to install."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoOtel:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, _NoOtel())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{REPO / 'src'}"}
    r = subprocess.run([sys.executable, "-m", "smoa", "ask", "--otel", "hi"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "smoa: error: OpenTelemetry export needs the otel extra, which is not installed: pip install 'smoa[otel]'"
    ]
    # without the flag, a query runs and never imports OpenTelemetry
    code = (
        "import sys, smoa\n"
        "from smoa.testing import ScriptedBackend, mixture_responder\n"
        "r = smoa.run_sync('hi', 'moa', backends={'local': ScriptedBackend(responder=mixture_responder())}, n=2)\n"
        "assert r.answer\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_smoa_serve_otel_exports_each_query(receiver, tmp_path):
    """`smoa serve --otel` as a user runs it: each chat completion reaches the OTLP receiver."""
    pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")
    import httpx

    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as fake:
        cfg = tmp_path / "smoa.toml"
        cfg.write_text(
            f'[backends.fake]\ntype = "openai"\nbase_url = "{fake.base_url}"\n\n'
            '[pipelines.mix]\nmethod = "moa"\nn = 2\nmax_rounds = 1\nagent = { backend = "fake", model = "m1" }\n'
        )
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/v1/traces", "OTEL_BSP_SCHEDULE_DELAY": "50",
               "PYTHONPATH": str(REPO / "src"), "SMOA_NO_TRACE_STORE": "1"}
        with ServerProcess(["python", "-m", "smoa", "serve", "--otel", "-c", str(cfg), "--port", "{port}"], env=env) as srv:
            r = httpx.post(f"{srv.base_url}/chat/completions", timeout=60,
                           json={"model": "mix", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 20
            while len(receiver.spans()) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "exporting traces as OpenTelemetry spans" in srv.log()
    got = receiver.spans()
    assert sorted(s.name for _, _, s, _ in got) == ["chat m1", "chat m1", "chat m1", "invoke_workflow mix"]
    root = next(a for _, _, s, a in got if not s.parent_span_id)
    assert root["smoa.trace_id"] == r.headers["x-smoa-trace-id"]
    assert {res["service.name"] for res, *_ in got} == {"smoa"}


def test_the_standard_endpoint_variable_alone_turns_export_on(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    r = smoa_query(max_rounds=1)  # no instrument(), no flag: smoa.run sees the variable
    assert otel.flush(10_000)
    got = receiver.spans()
    assert len(got) == len(r.trace.calls) + 1
    assert {res["service.name"] for res, *_ in got} == {"smoa"}
    monkeypatch.setenv("SMOA_OTEL", "0")
    otel.uninstrument()
    receiver.requests.clear()
    smoa_query(max_rounds=1)
    assert receiver.requests == []


@pytest.mark.server
def test_ray_workers_export_their_items(receiver, tmp_path, monkeypatch):
    """`smoa eval --executor ray --otel`: the items run in Ray workers, whose spans still arrive."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'smoa[ray]'")
    from smoa.eval.runner import run_eval

    data = Path(os.environ.get("SMOA_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (data / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {data}")
    monkeypatch.setenv("SMOA_OTEL", "1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "smoa-ray")
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as srv:
        cfg = tmp_path / "eval.toml"
        cfg.write_text(f'[backends.fake]\ntype = "openai"\nbase_url = "{srv.base_url}"\n\n'
                       '[pipelines.one]\nmethod = "single"\nagent = { backend = "fake", model = "m1" }\n')
        try:
            s = run_eval("gsm8k", "one", data=data, limit=2, config=cfg, out=tmp_path / "out", progress=False,
                         executor="ray", chunk_size=1)
        finally:
            if ray.is_initialized():
                ray.shutdown()
    assert s["written"] == 2 and s["errors"] == 0
    roots = [(res, a) for res, _, sp, a in receiver.spans() if not sp.parent_span_id]
    assert len(roots) == 2 and {res["service.name"] for res, _ in roots} == {"smoa-ray"}
    assert {a["smoa.eval.method"] for _, a in roots} == {"one"}
    assert all(a["smoa.eval.benchmark"] == "gsm8k" for _, a in roots)
    # made in the workers, not here: this process never turned export on
    assert otel._state is None


def test_smoa_eval_otel_and_a_bad_switch(receiver, tmp_path):
    data = Path(os.environ.get("SMOA_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (data / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"GSM8K data not found under {data}")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/v1/traces"}
    with ServerProcess(["python", "-m", "smoa.fakeserver", "--port", "{port}"]) as fake:
        cfg = tmp_path / "eval.toml"
        cfg.write_text(f'[backends.fake]\ntype = "openai"\nbase_url = "{fake.base_url}"\n\n'
                       '[pipelines.one]\nmethod = "single"\nagent = { backend = "fake", model = "m1" }\n')
        r = subprocess.run([sys.executable, "-m", "smoa", "eval", "-b", "gsm8k", "-m", "one", "-d", str(data), "--limit", "3",
                            "-c", str(cfg), "-o", str(tmp_path / "out"), "--otel", "--no-progress"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    roots = [a for _, _, s, a in receiver.spans() if not s.parent_span_id]
    assert len(roots) == 3 and {a["smoa.eval.method"] for a in roots} == {"one"}
    r = subprocess.run([sys.executable, "-m", "smoa", "ask", "hi"], capture_output=True, text=True, timeout=60,
                       env={**env, "SMOA_OTEL": "maybe"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["smoa: error: SMOA_OTEL='maybe' is not understood: use 1 to export traces or 0 not to"]


def test_instrument_joins_the_applications_sdk_provider(monkeypatch):
    """An application that set up OpenTelemetry (e.g. Phoenix's register()) gets smoa's spans
    in its own provider; with no SDK provider set, smoa makes one that exports over OTLP."""
    import opentelemetry.trace as trace_api

    exp = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(exp))
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: app_provider)
    assert otel.instrument() is app_provider
    smoa_query(max_rounds=1)
    assert len([s for s in exp.get_finished_spans() if s.parent is None]) == 1
    otel.uninstrument()
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: trace_api.ProxyTracerProvider())
    own = otel.instrument()  # nothing is exported: no query runs
    assert own is not app_provider and own.resource.attributes["service.name"] == "smoa"
