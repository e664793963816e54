"""Concurrent queries on the embedded model: 4 smoa queries at once against the same 4 one after another.

One pipeline (so one backend, one model, one collector), smoa n=3 k=2 up to 2 layers,
fixed roles, temperature 0.7 with a fixed seed, on the first GSM8K test items. Side by
side in each repeat: the 4 queries in sequence, then the 4 with `asyncio.gather`, each
variant on a context of its own (n_ctx 4096 and 4098; the KV reuse of one does not help
the other). The collector gathers the requests that reach the model within 5 ms into one
batch whatever query they belong to, so concurrent queries' proposers (and judges and
moderators) decode together; the batch sizes it ran are reported.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import median, private_cache_dir
from .cost import load_items
from .prefix import ROLES, threads

SETTINGS = {"n": 3, "k": 2, "max_rounds": 2, "max_tokens": 64, "judge_max_tokens": 96, "temperature": 0.7, "seed": 1}


def _pipeline(n_ctx: int) -> Any:
    from smoa.config import AgentSpec, BackendSpec, PipelineSpec, build_pipeline

    s = SETTINGS
    structured = AgentSpec(temperature=0.0, max_tokens=s["judge_max_tokens"])
    spec = PipelineSpec(
        method="smoa", n=s["n"], k=s["k"], max_rounds=s["max_rounds"], seed=s["seed"], roles=list(ROLES),
        agent=AgentSpec(backend="local", max_tokens=s["max_tokens"], temperature=s["temperature"]),
        judge=structured, moderator=structured,
    )
    return build_pipeline(spec, name="concurrent", cache=False, backends={"local": BackendSpec(type="local", n_ctx=n_ctx, n_threads=threads())})


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
    gen = sum(c.completion_tokens for r in rs for c in r.trace.calls)
    return {"wall_s": wall, "generated": gen, "gen_tok_s": gen / wall, "batches": col.batches[before:]}


def run(queries: int = 4, repeats: int = 1) -> dict[str, Any]:
    questions = [it["question"] + "\nEnd with: The answer is <number>." for it in load_items(queries)]
    rows: dict[str, list[dict[str, Any]]] = {"sequential": [], "concurrent": []}
    with private_cache_dir():
        pipes = {"sequential": (_pipeline(4096), 4096), "concurrent": (_pipeline(4098), 4098)}

        async def go() -> None:
            for _ in range(repeats):
                for name, (pipe, n_ctx) in pipes.items():
                    rows[name].append(await _variant(pipe, questions, name == "concurrent", n_ctx))

        asyncio.run(go())
    med = {v: {k: median([r[k] for r in rs]) for k in ("wall_s", "generated", "gen_tok_s")} for v, rs in rows.items()}
    return {"queries": len(questions), "repeats": repeats, "settings": SETTINGS, "median": med,
            "batches": {v: [r["batches"] for r in rs] for v, rs in rows.items()},
            "wall_ratio": med["concurrent"]["wall_s"] / med["sequential"]["wall_s"],
            "tok_s_ratio": med["concurrent"]["gen_tok_s"] / med["sequential"]["gen_tok_s"]}


def report(res: dict[str, Any]) -> str:
    lines = [f"concurrent queries on the embedded model (SmolLM2-135M): {res['queries']} smoa queries, "
             f"sequential vs asyncio.gather, median of {res['repeats']}"]
    for v, r in res["median"].items():
        sizes = res["batches"][v][0]
        lines.append(f"  {v:<11} wall {r['wall_s']:.1f} s, generated {r['generated']:.0f} tokens, {r['gen_tok_s']:.1f} tok/s; "
                     f"batch sizes {sizes}")
    lines.append(f"  concurrent / sequential: wall {res['wall_ratio']:.2f}, generated tok/s {res['tok_s_ratio']:.2f}")
    return "\n".join(lines)
