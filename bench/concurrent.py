"""Concurrent queries on the embedded model: 4 smoa queries at once against the same 4 one after another.

One pipeline (so one backend, one model, one collector), smoa n=3 k=2 up to 2 layers,
fixed roles, temperature 0.7 with a fixed seed, on the first GSM8K test items. Side by
side in each repeat: the 4 queries in sequence, then the 4 with `asyncio.gather`, each
variant on a context of its own (n_ctx 4096 and 4098; the KV reuse of one does not help
the other). The collector gathers the requests that reach the model within 5 ms into one
batch whatever query they belong to, so concurrent queries' proposers (and judges and
moderators) decode together; the batch sizes it ran are reported.

Both are run with KV reuse on (the default) and off (``options.kv_reuse = false``, on
contexts of their own), since reuse helps queries in sequence more than queries at once:
the prompt tokens each variant evaluated are reported next to its wall time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import median, private_cache_dir
from .cost import load_items
from .prefix import ROLES, threads

SETTINGS = {"n": 3, "k": 2, "max_rounds": 2, "max_tokens": 64, "judge_max_tokens": 96, "temperature": 0.7, "seed": 1}
KEYS = ("wall_s", "generated", "gen_tok_s", "prompt_sent", "prompt_evaluated")


def _pipeline(n_ctx: int, kv_reuse: bool = True) -> Any:
    from smoa.config import AgentSpec, BackendSpec, PipelineSpec, build_pipeline

    s = SETTINGS
    structured = AgentSpec(temperature=0.0, max_tokens=s["judge_max_tokens"])
    spec = PipelineSpec(
        method="smoa", n=s["n"], k=s["k"], max_rounds=s["max_rounds"], seed=s["seed"], roles=list(ROLES),
        agent=AgentSpec(backend="local", max_tokens=s["max_tokens"], temperature=s["temperature"]),
        judge=structured, moderator=structured,
    )
    backend = BackendSpec(type="local", n_ctx=n_ctx, n_threads=threads(), options={"kv_reuse": kv_reuse})
    return build_pipeline(spec, name="concurrent", cache=False, backends={"local": backend})


async def _variant(pipe: Any, questions: list[str], together: bool, n_ctx: int) -> dict[str, Any]:
    from smoa.backends.local import LocalBackend
    from smoa.engine import Engine

    col = LocalBackend(n_ctx=n_ctx, n_threads=threads()).model.collector()
    before = len(col.batches)
    t0 = time.perf_counter()
    if together:
        rs = await asyncio.gather(*(Engine(pipe).run(q) for q in questions))
    else:
        rs = [await Engine(pipe).run(q) for q in questions]
    wall = time.perf_counter() - t0
    calls = [c for r in rs for c in r.trace.calls]
    gen = sum(c.completion_tokens for c in calls)
    return {"wall_s": wall, "generated": gen, "gen_tok_s": gen / wall, "batches": col.batches[before:],
            "prompt_sent": sum(c.prompt_tokens for c in calls),
            "prompt_evaluated": sum(c.prompt_evaluated if c.prompt_evaluated is not None else c.prompt_tokens for c in calls)}


def run(queries: int = 4, repeats: int = 3, reuse: tuple[bool, ...] = (True, False)) -> dict[str, Any]:
    questions = [it["question"] + "\nEnd with: The answer is <number>." for it in load_items(queries)]
    # a context of its own per (variant, reuse): n_ctx is the key of the loaded model
    ctx = {(v, r): 4096 + 2 * i for i, (v, r) in enumerate((v, r) for r in reuse for v in ("sequential", "concurrent"))}
    rows: dict[tuple[str, bool], list[dict[str, Any]]] = {k: [] for k in ctx}
    with private_cache_dir():
        pipes = {k: (_pipeline(n, kv_reuse=k[1]), n) for k, n in ctx.items()}

        async def go() -> None:
            for _ in range(repeats):  # interleaved: every variant once per repeat
                for (v, r), (pipe, n_ctx) in pipes.items():
                    rows[(v, r)].append(await _variant(pipe, questions, v == "concurrent", n_ctx))

        asyncio.run(go())
    out: dict[str, Any] = {"queries": len(questions), "repeats": repeats, "settings": SETTINGS, "by_reuse": {}}
    for r in reuse:
        med = {v: {k: median([x[k] for x in rows[(v, r)]]) for k in KEYS} for v in ("sequential", "concurrent")}
        out["by_reuse"]["on" if r else "off"] = {
            "median": med, "batches": {v: [x["batches"] for x in rows[(v, r)]] for v in ("sequential", "concurrent")},
            "wall_ratio": med["concurrent"]["wall_s"] / med["sequential"]["wall_s"],
            "tok_s_ratio": med["concurrent"]["gen_tok_s"] / med["sequential"]["gen_tok_s"],
        }
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"concurrent queries on the embedded model (SmolLM2-135M): {res['queries']} smoa queries, "
             f"sequential vs asyncio.gather, median of {res['repeats']}"]
    for r, x in res["by_reuse"].items():
        lines.append(f"  KV reuse {r}:")
        for v, m in x["median"].items():
            sizes = x["batches"][v][0]
            lines.append(f"    {v:<11} wall {m['wall_s']:.1f} s, generated {m['generated']:.0f} tokens, {m['gen_tok_s']:.1f} tok/s, "
                         f"prompt evaluated {m['prompt_evaluated']:.0f} of {m['prompt_sent']:.0f}; batch sizes {sizes}")
        lines.append(f"    concurrent / sequential: wall {x['wall_ratio']:.2f}, generated tok/s {x['tok_s_ratio']:.2f}")
    return "\n".join(lines)
