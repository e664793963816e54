"""Batched local proposers: 4 generations on the embedded model, as one batch vs one after another.

Same prompts, same number of generated tokens (end-of-generation is masked, so every
sequence runs exactly `tokens` steps), temperature 0.7 with distinct seeds. Variants, run
side by side in each repeat:

- batched:     BatchDecoder.generate(4 jobs): shared prefix once, one llama_decode per step
- sequential:  BatchDecoder.generate([job]) 4 times (the same code, batch of one)
  (both with reuse=False: KV reuse across calls is `bench prefix`'s subject, not this one's)
- plain:       llama-cpp-python's own Llama.create_completion 4 times (cold KV cache each),
               timed by llama.cpp's perf counters: the reference for prompt and generation rates
"""

from __future__ import annotations

import time
from typing import Any

from .common import line, median

TARGET = 2.5
QUESTION = "Explain in a few sentences why the sky is blue, and what changes at sunset."
ROLES = (
    "You are a careful physicist who explains with precise, correct science.",
    "You are a patient primary-school teacher who uses simple words and examples.",
    "You are a sceptical editor who checks every claim before answering.",
    "You are a poet who answers accurately but with vivid imagery.",
)


def _setup(n_threads: int | None):
    from smoa.backends.local import LocalBackend, get_model
    from smoa.types import Request, Settings

    be = LocalBackend(n_threads=n_threads)
    m = get_model(be.path, be.n_ctx, be.n_threads)
    reqs = [
        Request(messages=({"role": "system", "content": r}, {"role": "user", "content": QUESTION}), model="smollm2",
                settings=Settings(temperature=0.7, max_tokens=10_000, seed=100 + i))
        for i, r in enumerate(ROLES)
    ]
    return be, m, reqs


def _plain(m: Any, jobs: list[Any]) -> dict[str, float]:
    import llama_cpp

    lib = llama_cpp.llama_cpp
    llm = m.llm
    eog = {t: float("-inf") for t in m.decoder.eog}
    p_tok = p_ms = g_tok = g_ms = 0.0
    t0 = time.perf_counter()
    for j in jobs:
        llm.reset()
        lib.llama_perf_context_reset(llm.ctx)
        out = llm.create_completion(prompt=j.tokens, max_tokens=j.max_tokens, temperature=j.temperature, top_p=j.top_p,
                                    seed=j.seed, logit_bias=eog)
        assert out["usage"]["completion_tokens"] == j.max_tokens, out["usage"]
        perf = lib.llama_perf_context(llm.ctx)
        p_tok += perf.n_p_eval
        p_ms += perf.t_p_eval_ms
        g_tok += perf.n_eval
        g_ms += perf.t_eval_ms
    wall = time.perf_counter() - t0
    llm.reset()
    gen = sum(j.max_tokens for j in jobs)
    return {"wall_s": wall, "generated": gen, "gen_per_s_wall": gen / wall,
            "prompt_tok_per_s": p_tok / (p_ms / 1000), "gen_tok_per_s": g_tok / (g_ms / 1000)}


def _ours(m: Any, jobs: list[Any], batched: bool) -> dict[str, float]:
    t0 = time.perf_counter()
    p_tok = p_s = g_tok = g_s = 0.0
    prefix = 0
    groups = [jobs] if batched else [[j] for j in jobs]
    for g in groups:
        res = m.decoder.generate(g, reuse=False)  # batching alone: every prompt from an empty cache
        assert all(r.completion_tokens == j.max_tokens for r, j in zip(res, g, strict=True))
        st = m.decoder.last_stats
        p_tok += st.prompt_evaluated
        p_s += st.prompt_s
        g_tok += st.generated
        g_s += st.generate_s
        prefix = max(prefix, st.prefix_tokens)
    wall = time.perf_counter() - t0
    gen = sum(j.max_tokens for j in jobs)
    return {"wall_s": wall, "generated": gen, "gen_per_s_wall": gen / wall, "prompt_tok_per_s": p_tok / p_s,
            "gen_tok_per_s": g_tok / g_s, "prefix_tokens": prefix, "prompt_evaluated": p_tok}


def run(tokens: int = 96, repeats: int = 3, n_threads: int | None = None) -> dict[str, Any]:
    from smoa.backends.local import _LoadedModel

    be, m, reqs = _setup(n_threads)
    with m.lock:
        jobs = [be.job_for(r, m) for r in reqs]
    for j in jobs:
        j.max_tokens = tokens
        j.ignore_eos = True
    assert isinstance(m, _LoadedModel)
    rows: dict[str, list[dict[str, float]]] = {"batched": [], "sequential": [], "plain": []}
    with m.lock:
        _ours(m, [jobs[0]], batched=False)  # warm up
        for _ in range(repeats):
            rows["batched"].append(_ours(m, jobs, batched=True))
            rows["sequential"].append(_ours(m, jobs, batched=False))
            rows["plain"].append(_plain(m, jobs))
    med = {v: {k: median([r[k] for r in rs]) for k in rs[0]} for v, rs in rows.items()}
    speedups = [b["gen_per_s_wall"] / s["gen_per_s_wall"] for b, s in zip(rows["batched"], rows["sequential"], strict=True)]
    speedups_plain = [b["gen_per_s_wall"] / p["gen_per_s_wall"] for b, p in zip(rows["batched"], rows["plain"], strict=True)]
    return {
        "model": be.path.name, "sequences": len(jobs), "tokens_each": tokens, "repeats": repeats,
        "prompt_tokens": [len(j.tokens) for j in jobs], "n_threads": m.llm.n_threads if hasattr(m.llm, "n_threads") else None,
        "median": med,
        "speedup_vs_sequential": median(speedups),
        "speedup_vs_plain": median(speedups_plain),
        "speedups": [round(x, 3) for x in speedups],
        "overhead_prompt": med["plain"]["prompt_tok_per_s"] / med["sequential"]["prompt_tok_per_s"],
        "overhead_gen": med["plain"]["gen_tok_per_s"] / med["sequential"]["gen_tok_per_s"],
    }


def report(res: dict[str, Any]) -> str:
    md = res["median"]
    lines = [f"batched local proposers: {res['model']}, {res['sequences']} sequences x {res['tokens_each']} tokens "
             f"(EOS masked), prompts {res['prompt_tokens']} tokens, shared prefix {md['batched']['prefix_tokens']:.0f}, "
             f"median of {res['repeats']}"]
    for v in ("batched", "sequential", "plain"):
        r = md[v]
        lines.append(f"  {v:<11} wall {r['wall_s']:.2f} s  generated tok/s (wall) {r['gen_per_s_wall']:7.1f}  "
                     f"prompt tok/s {r['prompt_tok_per_s']:7.1f}  generation-phase tok/s {r['gen_tok_per_s']:7.1f}")
    lines.append(line("aggregate gen tok/s, batched / sequential", res["speedup_vs_sequential"], TARGET, ">=", fmt="{:.2f}"))
    lines.append(line("aggregate gen tok/s, batched / plain llama-cpp", res["speedup_vs_plain"], fmt="{:.2f}"))
    lines.append(line("overhead: plain / ours (sequential), prompt", res["overhead_prompt"], fmt="{:.2f}", note="1.0 = same speed"))
    lines.append(line("overhead: plain / ours (sequential), generation", res["overhead_gen"], fmt="{:.2f}", note="1.0 = same speed"))
    return "\n".join(lines)
