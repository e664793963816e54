"""Concurrency limits across queries, the sequential mode, and the response cache."""

import asyncio

import pytest

from smoa.cache import CachedBackend, ResponseCache, cacheable, request_key
from smoa.config import AgentSpec, BackendSpec, PipelineSpec, build_pipeline, register_backend
from smoa.engine import Engine
from smoa.limits import Limiter
from smoa.testing import ScriptedBackend, mixture_responder, stage_of
from smoa.types import Request, Settings


def numbered(req):
    return f"answer from seed {req.settings.seed}"


def scripted_pipeline(method="smoa", latency=0.01, max_concurrency=None, **kw):
    be = ScriptedBackend(responder=mixture_responder(propose=numbered), latency_s=latency, max_concurrency=max_concurrency)
    spec = PipelineSpec(method=method, n=kw.pop("n", 4), max_rounds=kw.pop("max_rounds", 2), seed=1, roles=None, **kw)
    return be, build_pipeline(spec, instances={"local": be})


async def run_many(pipe, q, count, **engine_kw):
    return await asyncio.gather(*(Engine(pipe, **engine_kw).run(f"{q} {i}") for i in range(count)))


def test_global_limiter_bounds_calls_across_queries():
    be, pipe = scripted_pipeline()
    lim = Limiter(3)
    results = asyncio.run(run_many(pipe, "q", 5, limiter=lim))
    assert all(r.answer for r in results)
    assert be.max_in_flight == 3 == lim.peak
    assert lim.in_flight == 0


def test_backend_max_concurrency_is_shared_across_queries():
    be, pipe = scripted_pipeline(max_concurrency=2)
    asyncio.run(run_many(pipe, "q", 4))
    assert be.max_in_flight == 2


def test_sequential_engine_runs_one_call_at_a_time():
    be, pipe = scripted_pipeline(method="moa")
    r = asyncio.run(Engine(pipe, sequential=True).run("q"))
    assert be.max_in_flight == 1
    calls = sorted(r.trace.calls, key=lambda c: c.started_at)
    for a, b in zip(calls, calls[1:], strict=False):
        assert b.started_at >= a.started_at + a.latency_s - 1e-3


def test_limiter_works_across_event_loops():
    lim = Limiter(1)

    async def use():
        async with lim:
            await asyncio.sleep(0)

    asyncio.run(use())
    asyncio.run(use())  # a fresh loop gets a fresh semaphore
    assert lim.in_flight == 0


def test_sequential_backend_setting_limits_to_one():
    pipe = build_pipeline(
        PipelineSpec(method="moa", n=2, agent=AgentSpec(backend="srv", model="m")),
        backends={"srv": BackendSpec(type="openai", base_url="http://127.0.0.1:9/v1", sequential=True)},
        cache=False,
    )
    assert pipe.proposers[0].backend.max_concurrency == 1


def test_pipelines_built_from_one_pool_share_the_endpoint_limit():
    """A server or eval run builds many pipelines over one pool of raw backends; each wraps it
    in its own cache and retry wrappers, and all of them count against one endpoint limit."""
    from smoa.limits import backend_limiter

    backends = {"srv": BackendSpec(type="openai", base_url="http://127.0.0.1:9/v1", max_concurrency=2)}
    pool: dict = {}
    a, b = (build_pipeline(PipelineSpec(method="smoa", n=3, agent=AgentSpec(backend="srv", model="m")),
                           backends=backends, cache=True, pool=pool) for _ in range(2))
    assert list(pool) == ["srv"]
    agents = [*a.proposers, a.judge, b.aggregator]
    assert len({id(backend_limiter(x.backend)) for x in agents}) == 1
    assert backend_limiter(a.judge.backend) is backend_limiter(pool["srv"])


# -- cache -----------------------------------------------------------------


def req(**settings):
    seed_given = settings.pop("seed_given", True)
    return Request(messages=({"role": "user", "content": "hi"},), model="m", settings=Settings(**settings), seed_given=seed_given)


def test_cacheable_policy():
    assert cacheable(req(temperature=0))
    assert cacheable(req(temperature=0.7, seed=3))
    assert not cacheable(req(temperature=0.7, seed=3, seed_given=False))
    assert not cacheable(req(temperature=0.7))
    assert not cacheable(req())


def test_key_covers_backend_model_messages_settings_schema():
    base = req(temperature=0)
    k = request_key("b", base)
    assert k == request_key("b", req(temperature=0))
    assert k != request_key("other", base)
    assert k != request_key("b", req(temperature=0, max_tokens=5))
    assert k != request_key("b", Request(messages=base.messages, model="m2", settings=base.settings))
    assert k != request_key("b", Request(messages=base.messages, model="m", settings=base.settings, json_schema={"type": "object"}))
    assert k != request_key("b", Request(messages=({"role": "system", "content": "hi"},), model="m", settings=base.settings))


def test_cached_backend_hits_and_marks_cached(tmp_path):
    inner = ScriptedBackend(responder=lambda r: "reply")
    cb = CachedBackend(inner, ResponseCache(tmp_path / "c.sqlite3"))

    async def go():
        a = await cb.complete(req(temperature=0))
        b = await cb.complete(req(temperature=0))
        c = await cb.complete(req(temperature=0.5))
        d = await cb.complete(req(temperature=0.5))
        return a, b, c, d

    a, b, c, d = asyncio.run(go())
    assert len(inner.calls) == 3  # the second temperature-0 call came from the cache
    assert not a.cached and b.cached and b.text == "reply"
    assert not c.cached and not d.cached
    assert cb.cache.hits == 1 and cb.cache.misses == 1
    # a second process (a new cache object on the same file) hits too
    again = CachedBackend(inner, ResponseCache(tmp_path / "c.sqlite3"))
    assert asyncio.run(again.complete(req(temperature=0))).cached


_shared_inner = ScriptedBackend(responder=mixture_responder(propose=numbered))
register_backend("perf-scripted", lambda spec, name: _shared_inner)


def cached_pipeline(seed=1, **kw):
    spec = PipelineSpec(method="smoa", n=3, k=2, max_rounds=2, seed=seed, agent=AgentSpec(backend="s", temperature=0.7), **kw)
    return build_pipeline(spec, backends={"s": BackendSpec(type="perf-scripted")})


def test_repeated_run_skips_every_call_with_user_seed():
    _shared_inner.calls.clear()
    pipe = cached_pipeline()
    assert pipe.seed_given and pipe.cache
    r1 = asyncio.run(Engine(pipe).run("q"))
    n1 = len(_shared_inner.calls)
    r2 = asyncio.run(Engine(cached_pipeline()).run("q"))
    # only the aggregator (temperature 0.7, no seed of its own) is asked again
    asked = _shared_inner.calls[n1:]
    assert [stage_of(c) for c in asked] == ["aggregate"]
    cached = [c for c in r2.trace.calls if c.cached]
    assert len(cached) == len(r2.trace.calls) - len(asked)
    assert r2.trace.cost()["total"]["cached"] == len(cached)
    assert r1.trace.cost()["total"]["cached"] == 0
    by = r2.trace.cost()["by_stage"]["propose"]
    assert by["cached"] == by["calls"] and by["total_tokens"] == 0


def test_engine_default_seeds_are_not_cached():
    _shared_inner.calls.clear()
    spec = PipelineSpec(method="moa", n=2, max_rounds=1, agent=AgentSpec(backend="s", temperature=0.7))
    pipe = build_pipeline(spec, backends={"s": BackendSpec(type="perf-scripted")})
    assert not pipe.seed_given and not pipe.proposers[0].seed_given
    asyncio.run(Engine(pipe).run("q"))
    r = asyncio.run(Engine(pipe).run("q"))
    assert not any(c.cached for c in r.trace.calls)


@pytest.mark.parametrize("how", ["flag", "spec", "env"])
def test_cache_can_be_turned_off(how, monkeypatch):
    if how == "env":
        monkeypatch.setenv("SMOA_NO_CACHE", "1")
        pipe = cached_pipeline()
    elif how == "spec":
        pipe = cached_pipeline(cache=False)
    else:
        spec = PipelineSpec(method="smoa", n=3, k=2, seed=1, agent=AgentSpec(backend="s"))
        pipe = build_pipeline(spec, backends={"s": BackendSpec(type="perf-scripted")}, cache=False)
    assert not pipe.cache
    assert not isinstance(pipe.proposers[0].backend, CachedBackend)
