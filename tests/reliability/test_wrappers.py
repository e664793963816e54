"""Retry, timeout, fallback, deadline and partial failure, on the scripted backend."""

import asyncio
import json
import random
import time

import pytest

from smoa import BackendError, SmoaError, resolve
from smoa.config import ConfigFile, build_pipeline
from smoa.engine import Engine
from smoa.testing import ScriptedBackend, mixture_responder
from smoa.trace import Trace
from smoa.types import Completion, InputError, Request
from smoa.wrappers import FallbackBackend, RetryingBackend, RetryPolicy, open_call_log


def req(text="hi", model="m"):
    return Request(messages=({"role": "user", "content": text},), model=model)


def fast(inner, **kw):
    """A retrying backend whose waits are recorded, not slept."""
    kw.setdefault("retries", 3)
    be = RetryingBackend(inner, RetryPolicy(**kw), seed=0)
    be.waits = []

    async def no_sleep(s):
        be.waits.append(s)

    be.sleep = no_sleep
    return be


def run(coro):
    return asyncio.run(coro)


def test_retries_5xx_then_answers_and_logs_attempts():
    inner = ScriptedBackend().enqueue(BackendError("boom 500", status_code=500), BackendError("bad gateway", status_code=502), "ok")
    be = fast(inner)

    async def go():
        log, tok = open_call_log()
        comp = await be.complete(req())
        return comp, log

    comp, log = run(go())
    assert comp.text == "ok"
    assert log.attempts == 3 and log.errors == ["boom 500", "bad gateway"]
    assert len(be.waits) == 2


def test_honours_retry_after_over_backoff():
    inner = ScriptedBackend().enqueue(BackendError("slow down", status_code=429, retry_after=1.25), "ok")
    be = fast(inner, backoff_s=0.01)
    assert run(be.complete(req())).text == "ok"
    assert be.waits == [1.25]


def test_backoff_is_exponential_capped_and_jittered():
    pol = RetryPolicy(backoff_s=0.5, backoff_max_s=3.0, jitter=False)
    rng = random.Random(0)
    assert [pol.delay(i, None, rng) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jit = RetryPolicy(backoff_s=0.5, backoff_max_s=3.0)
    for i in range(5):
        for _ in range(50):
            assert 0 <= jit.delay(i, None, rng) <= min(3.0, 0.5 * 2**i)


@pytest.mark.parametrize(
    "err",
    [
        BackendError("refused the API key (401)", status_code=401),
        BackendError("not found (404)", status_code=404),
        InputError("the prompt has about 9000 tokens, over the context window of 4096"),
    ],
)
def test_client_mistakes_are_not_retried(err):
    inner = ScriptedBackend().enqueue(err)
    be = fast(inner)
    with pytest.raises(BackendError) as ei:
        run(be.complete(req()))
    assert ei.value is err and len(inner.calls) == 1


def test_gives_up_after_retries_with_one_clear_error():
    inner = ScriptedBackend(responder=lambda r: (_ for _ in ()).throw(BackendError("x: the endpoint answered 503: busy", status_code=503)))
    be = fast(inner, retries=2)
    with pytest.raises(BackendError, match=r"the endpoint answered 503: busy \(gave up after 3 attempts\)"):
        run(be.complete(req()))
    assert len(inner.calls) == 3


def test_timeout_per_attempt_then_retry():
    inner = ScriptedBackend(latency_s=5).enqueue("never")
    calls = {"n": 0}

    class Hangs(ScriptedBackend):
        async def complete(self, request):
            calls["n"] += 1
            if calls["n"] == 1:
                await asyncio.sleep(30)
            return Completion(text="second try")

    be = fast(Hangs(), timeout_s=0.05)
    t0 = time.monotonic()
    assert run(be.complete(req())).text == "second try"
    assert time.monotonic() - t0 < 2
    assert inner.calls == []


def test_stream_is_not_retried_after_text_went_out():
    class Breaks(ScriptedBackend):
        async def stream(self, request):
            from smoa.types import StreamEvent

            yield StreamEvent(delta="half an ")
            raise BackendError("stream ended early", retryable=True)

    be = fast(Breaks())

    async def go():
        got = []
        with pytest.raises(BackendError, match="not retried"):
            async for ev in be.stream(req()):
                got.append(ev.delta)
        return got

    assert run(go()) == ["half an "]


def test_fallback_answers_when_primary_fails_and_is_logged():
    primary = ScriptedBackend().enqueue(BackendError("down", status_code=500))
    backup = ScriptedBackend(responder=lambda r: f"backup via {r.model}")
    be = FallbackBackend(primary, backup, "small-model", label="b:small-model")

    async def go():
        log, _ = open_call_log()
        return await be.complete(req()), log

    comp, log = run(go())
    assert comp.text == "backup via small-model"
    assert log.fallback == "b:small-model" and log.errors == ["down"]


def numbered(req):
    return f"answer from seed {req.settings.seed}"


def test_trace_records_attempts_and_old_traces_still_load():
    flaky = {"n": 0}

    def propose(r):
        if r.settings.seed == 2 and flaky["n"] < 2:
            flaky["n"] += 1
            raise BackendError("injected 500", status_code=500)
        return numbered(r)

    be = ScriptedBackend(responder=mixture_responder(propose=propose))
    pipe = resolve(method="moa", instances={"local": be}, n=3, max_rounds=1, seed=1)
    pipe = pipe.__class__(**{**pipe.__dict__, "proposers": tuple(
        a.__class__(**{**a.__dict__, "backend": fast(a.backend)}) for a in pipe.proposers)})
    r = asyncio.run(Engine(pipe).run("q"))
    rec = next(c for c in r.trace.calls if c.agent == "proposer-2")
    assert rec.attempts == 3 and rec.attempt_errors == ["injected 500", "injected 500"] and rec.error is None
    h = r.trace.health()
    assert h["retries"] == 2 and h["retried_calls"] == 1 and not h["degraded"]
    d = json.loads(r.trace.to_json())
    for c in d["calls"]:  # a trace written before these fields existed
        for key in ("attempts", "attempt_errors", "fallback"):
            c.pop(key)
    old = Trace.from_dict(d)
    assert old.calls[0].attempts == 1 and old.calls[0].attempt_errors == []


def cfg(**pipe):
    return ConfigFile(
        backends={"s": {"type": "scripted-test", "retries": 2, "backoff_s": 0}},
        pipelines={"p": {"method": "moa", "n": 3, "max_rounds": 1, "seed": 1, "agent": {"backend": "local"}, **pipe}},
    )


def test_config_wraps_agents_per_their_policy():
    be = ScriptedBackend(responder=mixture_responder(propose=numbered))
    c = ConfigFile(
        backends={"hosted": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "retries": 4, "timeout_s": 7, "backoff_s": 0.1}},
        pipelines={"p": {
            "method": "smoa", "n": 2, "k": 1, "seed": 1,
            "agent": {"backend": "hosted", "model": "m"},
            "judge": {"backend": "hosted", "model": "m", "retries": 0, "timeout_s": 3,
                      "fallback": {"backend": "local", "model": "tiny"}},
            "deadline_s": 60, "min_proposers": 2,
        }},
    )
    pipe = resolve(c, instances={"local": be})
    prop = pipe.proposers[0].backend
    assert isinstance(prop, RetryingBackend) and prop.policy.retries == 4 and prop.policy.timeout_s == 7
    # the aiohttp client makes one attempt per call (a POST is never resent): retries are the wrapper's, counted
    assert prop.inner.http_client == "aiohttp" and prop.inner._client is None
    sdk = resolve(c.model_copy(update={"backends": {"hosted": c.backends["hosted"].model_copy(update={"http_client": "openai-sdk"})}}),
                  instances={"local": be}).proposers[0].backend
    assert sdk.inner._client.max_retries == 0  # nor does the SDK, behind our back
    judge = pipe.judge.backend
    assert isinstance(judge, FallbackBackend) and judge.fallback is be and judge.fallback_model == "tiny"
    assert judge.inner.policy.retries == 0 and judge.inner.policy.timeout_s == 3
    assert pipe.deadline_s == 60 and pipe.min_proposers == 2
    # the embedded backend is not wrapped unless asked
    assert resolve(method="moa", instances={"local": be}).proposers[0].backend is be


def test_fallback_agent_answers_for_a_dead_aggregator():
    dead = ScriptedBackend(responder=mixture_responder(propose=numbered, aggregate=lambda r: (_ for _ in ()).throw(BackendError("agg down", status_code=500))))
    backup = ScriptedBackend(responder=lambda r: "backup final")
    c = ConfigFile(pipelines={"p": {"method": "moa", "n": 2, "max_rounds": 1, "seed": 1,
                                    "aggregator": {"fallback": {"backend": "spare", "model": "x"}}}})
    pipe = resolve(c, instances={"local": dead, "spare": backup})
    r = asyncio.run(Engine(pipe).run("q"))
    assert r.answer == "backup final"
    agg = r.trace.calls[-1]
    assert agg.fallback == "spare:x" and agg.attempt_errors == ["agg down"]
    assert r.trace.health()["fallback_agents"] == [{"call": agg.id, "stage": "aggregate", "agent": "aggregator", "used": "spare:x"}]


def test_deadline_bounds_a_hanging_query_with_one_clear_error():
    be = ScriptedBackend(responder=mixture_responder(propose=numbered), latency_s=30)
    c = ConfigFile(pipelines={"p": {"method": "moa", "n": 2, "max_rounds": 1, "deadline_s": 0.2}})
    pipe = resolve(c, instances={"local": be})
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"ran past its deadline of 0.2 s \(deadline_s\) with 2 call\(s\) unanswered") as ei:
        asyncio.run(Engine(pipe).run("q"))
    assert time.monotonic() - t0 < 2
    assert ei.value.trace.error.startswith("the query ran past its deadline")


def test_min_proposers_fails_the_query_clearly():
    def propose(r):
        if r.settings.seed != 1:
            raise BackendError("endpoint down", status_code=500)
        return numbered(r)

    be = ScriptedBackend(responder=mixture_responder(propose=propose))
    spec_cfg = ConfigFile(pipelines={"p": {"method": "moa", "n": 3, "max_rounds": 1, "seed": 1, "min_proposers": 2}})
    with pytest.raises(SmoaError, match=r"only 1 of 3 proposers answered in layer 1, fewer than min_proposers = 2: endpoint down"):
        asyncio.run(Engine(resolve(spec_cfg, instances={"local": be})).run("q"))


def test_partial_failure_is_reported_to_the_caller():
    def propose(r):
        if r.settings.seed == 3:
            raise BackendError("endpoint down", status_code=500)
        return numbered(r)

    be = ScriptedBackend(responder=mixture_responder(propose=propose, judge="no verdict"))
    pipe = resolve(method="smoa", instances={"local": be}, n=4, k=2, max_rounds=1, seed=1)
    r = asyncio.run(Engine(pipe).run("q"))
    h = r.trace.health()
    assert h["degraded"]
    assert h["dropped_proposers"] == [{"layer": 1, "proposer": 2, "agent": "proposer-3", "error": "endpoint down"}]
    assert r.to_dict()["trace"]["health"]["dropped_proposers"][0]["proposer"] == 2
    from smoa.cli import describe_run

    text = describe_run(r.trace.to_dict())
    assert "layer 1: 3/4 proposals" in text
    assert "faults survived: dropped 1 failed proposers (layer 1 proposer 3)" in text


def test_min_proposers_above_n_is_a_config_error():
    from smoa.config import PipelineSpec
    from smoa.types import ConfigError

    with pytest.raises(ConfigError, match="min_proposers = 5 is more than n = 3"):
        build_pipeline(PipelineSpec(method="moa", n=3, min_proposers=5), instances={"local": ScriptedBackend()})
