"""Prompt tokens evaluated per smoa query on the embedded model, without and with KV reuse.

smoa (n=3, k=2, up to 2 layers, fixed roles, temperature 0, response cache off) on the
first GSM8K test items, run one query after another on the embedded model, each query
twice: with `options.kv_reuse = false` (every prompt evaluated from an empty KV cache; a
layer's proposers still share their common prefix inside one batch, as before reuse) and
with reuse on. The two variants have a model context each (same file, n_ctx 4096 and
4097, so get_model keeps them apart): the reuse variant continues from the KV state its
earlier queries left (repeated roles and prompt headers across queries are part of what
reuse saves) while the runs interleave (cold first, then reuse first, ...), so a
loaded machine slows both alike. Per stage: prompt tokens sent and prompt tokens
evaluated, from the trace (`CallRecord.prompt_evaluated`); per query: wall time, and
the ratio reuse / cold of each pair. The model is Qwen2.5-Coder-1.5B
where its file is installed (or SMOA_BENCH_MODEL names a .gguf file or a catalog name,
e.g. smollm2-135m), SmolLM2-135M otherwise and with --quick.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from .common import median, private_cache_dir
from .cost import load_items

QWEN = "qwen2.5-coder-1.5b"  # smoa.models catalog name: used where installed
STAGES = ("propose", "judge", "moderate", "aggregate")
ROLES = (
    "You are a careful mathematician who checks every step and every unit.",
    "You are a patient teacher who explains each step in plain words.",
    "You are an accountant who double-checks arithmetic before answering.",
)
SETTINGS = {"n": 3, "k": 2, "max_rounds": 2, "max_tokens": 160, "judge_max_tokens": 128, "temperature": 0.0, "seed": 1}


def model_path(quick: bool) -> str | None:
    if quick:
        return None
    from smoa.models import find, installed_path, resolve

    env = os.environ.get("SMOA_BENCH_MODEL")  # a .gguf path or a catalog name
    if env:
        return env if env.endswith(".gguf") else str(resolve(env))

    qwen = installed_path(find(QWEN))
    return str(qwen) if qwen is not None else None


def threads() -> int | None:
    """SMOA_BENCH_THREADS: llama.cpp threads (default: one per CPU). On a machine that other
    jobs load, 1 thread avoids the stalls of threads that wait for each other at every step;
    which tokens are evaluated does not depend on it."""
    t = os.environ.get("SMOA_BENCH_THREADS")
    return int(t) if t else None


def pipeline(path: str | None, kv_reuse: bool, s: dict[str, Any] = SETTINGS) -> Any:
    from smoa.config import AgentSpec, BackendSpec, PipelineSpec, build_pipeline

    structured = AgentSpec(temperature=0.0, max_tokens=s["judge_max_tokens"])
    spec = PipelineSpec(
        method="smoa", n=s["n"], k=s["k"], max_rounds=s["max_rounds"], seed=s["seed"], roles=list(ROLES),
        agent=AgentSpec(backend="local", max_tokens=s["max_tokens"], temperature=s["temperature"]),
        judge=structured, moderator=structured,
    )
    backends = {"local": BackendSpec(type="local", model_path=path, n_ctx=4097 if kv_reuse else 4096, n_threads=threads(),
                                     options={"kv_reuse": kv_reuse})}
    return build_pipeline(spec, name=f"prefix-{'reuse' if kv_reuse else 'cold'}", cache=False, backends=backends)


async def _query(pipe: Any, question: str) -> Any:
    from smoa.engine import Engine

    t0 = time.perf_counter()
    r = await Engine(pipe).run(question)
    r.trace.wall_s = r.trace.wall_s or time.perf_counter() - t0
    return r.trace


def _summary(traces: list[Any]) -> dict[str, Any]:
    n = len(traces)
    by: dict[str, dict[str, float]] = {}
    for t in traces:
        for c in t.calls:
            if c.error or c.stage not in STAGES:
                continue
            a = by.setdefault(c.stage, {"calls": 0, "prompt_tokens": 0, "prompt_evaluated": 0, "completion_tokens": 0})
            a["calls"] += 1
            a["prompt_tokens"] += c.prompt_tokens
            a["prompt_evaluated"] += c.prompt_tokens if c.prompt_evaluated is None else c.prompt_evaluated
            a["completion_tokens"] += c.completion_tokens
    per_query = {st: {k: v / n for k, v in a.items()} for st, a in by.items()}
    sent = sum(a["prompt_tokens"] for a in per_query.values())
    evaluated = sum(a["prompt_evaluated"] for a in per_query.values())
    return {"per_query_by_stage": per_query, "prompt_sent": sent, "prompt_evaluated": evaluated,
            "completion_tokens": sum(a["completion_tokens"] for a in per_query.values()),
            "wall_s": [round(t.wall_s, 2) for t in traces], "wall_s_median": median([t.wall_s for t in traces]),
            "answers": [t.answer for t in traces]}


def run(queries: int = 3, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    path = model_path(quick)
    items = load_items(queries)
    questions = [it["question"] + "\nEnd with: The answer is <number>." for it in items]
    out: dict[str, Any] = {"queries": len(questions), "settings": SETTINGS,
                           "model": Path(path).name if path else "SmolLM2-135M-Instruct.Q4_1.gguf"}
    pipes = {"cold": pipeline(path, False), "reuse": pipeline(path, True)}
    traces: dict[str, list[Any]] = {"cold": [], "reuse": []}
    with private_cache_dir():
        from smoa.backends.local import LocalBackend

        for n_ctx in (4096, 4097):  # a model load is not a query: load both contexts first
            LocalBackend(model_path=path, n_ctx=n_ctx, n_threads=threads()).model  # noqa: B018
        for i, q in enumerate(questions):
            for name in (("cold", "reuse") if i % 2 == 0 else ("reuse", "cold")):
                t = asyncio.run(_query(pipes[name], q))
                traces[name].append(t)
                if progress:
                    sm = _summary([t])
                    print(f"  [query {i + 1} {name}: evaluated {sm['prompt_evaluated']:.0f} of {sm['prompt_sent']:.0f} "
                          f"sent, {sm['completion_tokens']:.0f} generated, {t.wall_s:.1f} s; by stage "
                          + ", ".join(f"{st} {a['prompt_evaluated']:.0f}/{a['prompt_tokens']:.0f}"
                                      for st, a in sm["per_query_by_stage"].items()) + "]", flush=True)
    for name, ts in traces.items():
        out[name] = _summary(ts)
    c, r = out["cold"], out["reuse"]
    out["evaluated_ratio"] = r["prompt_evaluated"] / c["prompt_evaluated"]
    out["wall_ratios"] = [round(b.wall_s / a.wall_s, 3) for a, b in zip(traces["cold"], traces["reuse"], strict=True)]
    out["wall_ratio"] = median(out["wall_ratios"])
    out["same_answers"] = sum(a == b for a, b in zip(c["answers"], r["answers"], strict=True))
    return out


def report(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [f"prefix (KV reuse): {res['model']}, smoa n={s['n']} k={s['k']} up to {s['max_rounds']} layers, "
             f"temperature {s['temperature']}, {res['queries']} GSM8K queries in sequence; per query, tokens "
             "evaluated / sent"]
    lines.append(f"  {'stage':<10}{'sent':>10}{'cold':>10}{'reuse':>10}")
    for st in STAGES:
        c = res["cold"]["per_query_by_stage"].get(st)
        r = res["reuse"]["per_query_by_stage"].get(st)
        if not c and not r:
            continue
        sent = (r or c)["prompt_tokens"]
        lines.append(f"  {st:<10}{sent:>10.0f}{(c or {}).get('prompt_evaluated', 0):>10.0f}"
                     f"{(r or {}).get('prompt_evaluated', 0):>10.0f}")
    for name in ("cold", "reuse"):
        x = res[name]
        lines.append(f"  {name:<6} prompt evaluated {x['prompt_evaluated']:.0f} of {x['prompt_sent']:.0f} sent, "
                     f"completion {x['completion_tokens']:.0f}, wall per query {x['wall_s']} s (median "
                     f"{x['wall_s_median']:.1f})")
    lines.append(f"  evaluated reuse / cold {res['evaluated_ratio']:.2f}, wall reuse / cold per query {res['wall_ratios']} "
                 f"(median {res['wall_ratio']:.2f}), "
                 f"same final answer in {res['same_answers']} of {res['queries']}")
    return "\n".join(lines)
