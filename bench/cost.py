"""Cost: tokens per query of smoa against moa, by stage, on GSM8K with the embedded model.

Both at the same n and layers, first `items` of GSM8K test (../shared/data/gsm8k), the
embedded SmolLM2-135M, response cache off. Roles are generated once per (dataset, task, n)
and cached on disk: their one-time cost is reported apart and amortized over the items.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from .common import private_cache_dir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
SETTINGS = {"n": 3, "max_rounds": 2, "k": 2, "max_tokens": 64, "judge_max_tokens": 96, "temperature": 0.7,
            "seed": 1, "concurrent_queries": 4}
STAGES = ("role", "propose", "judge", "moderate", "aggregate")


def load_items(count: int, path: Path = DATA) -> list[dict[str, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for ln in f:
            if len(out) >= count:
                break
            out.append(json.loads(ln))
    return out


def gold(answer: str) -> str:
    return answer.split("####")[-1].strip().replace(",", "")


def last_number(text: str) -> str | None:
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def pipeline(method: str, s: dict[str, Any] = SETTINGS, n_threads: int | None = None) -> Any:
    from smoa.config import AgentSpec, BackendSpec, PipelineSpec, build_pipeline
    from smoa.policy import get_policy

    structured = AgentSpec(temperature=0.0, max_tokens=s["judge_max_tokens"])
    spec = PipelineSpec(
        method=method, n=s["n"], max_rounds=s["max_rounds"], k=s["k"] if get_policy(method).sparse else None, seed=s["seed"],
        agent=AgentSpec(backend="local", max_tokens=s["max_tokens"], temperature=s["temperature"]),
        judge=structured, moderator=structured,
        dataset="Grade-school math word problems (GSM8K).",
        task="Solve the problem step by step and end with the final number.",
    )
    backends = {"local": BackendSpec(type="local", n_threads=n_threads)}
    return build_pipeline(spec, name=f"cost-{method}", cache=False, backends=backends)


async def _run_method(method: str, items: list[dict[str, str]], conc: int, n_threads: int | None) -> dict[str, Any]:
    from smoa.engine import Engine

    pipe = pipeline(method, n_threads=n_threads)
    sem = asyncio.Semaphore(conc)
    traces: list[Any] = [None] * len(items)

    async def one(i: int) -> None:
        async with sem:
            r = await Engine(pipe).run(items[i]["question"] + "\nEnd with: The answer is <number>.")
            traces[i] = r.trace

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(items))))
    wall = time.perf_counter() - t0
    per_stage: dict[str, dict[str, float]] = {}
    one_time: dict[str, float] = {"calls": 0, "tokens": 0}
    correct = 0
    for it, t in zip(items, traces, strict=True):
        cost = t.cost()["by_stage"]
        for st, c in cost.items():
            if st == "role":
                one_time["calls"] += c["calls"]
                one_time["tokens"] += c["total_tokens"]
                continue
            agg = per_stage.setdefault(st, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
            for k in agg:
                agg[k] += c[k]
        correct += last_number(t.answer) == gold(it["answer"])
    n = len(items)
    per_query = {st: {k: v / n for k, v in c.items()} for st, c in per_stage.items()}
    total = sum(c["total_tokens"] for c in per_query.values())
    return {"per_query_by_stage": per_query, "per_query_total": total, "roles_one_time": one_time,
            "per_query_total_with_roles": total + one_time["tokens"] / n, "accuracy": correct / n, "wall_s": wall,
            "stop_reasons": _count(t.stop_reason for t in traces)}


def _count(xs: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def run(items: int = 50, n_threads: int | None = None) -> dict[str, Any]:
    data = load_items(items)
    out: dict[str, Any] = {"items": len(data), "settings": SETTINGS, "methods": {}}
    with private_cache_dir():
        for method in ("smoa", "moa"):
            out["methods"][method] = asyncio.run(_run_method(method, data, SETTINGS["concurrent_queries"], n_threads))
    s, m = out["methods"]["smoa"], out["methods"]["moa"]
    out["smoa_over_moa"] = s["per_query_total_with_roles"] / m["per_query_total"]
    return out


def report(res: dict[str, Any]) -> str:
    s = res["settings"]
    lines = [f"cost: first {res['items']} GSM8K test items, embedded SmolLM2-135M, n={s['n']}, {s['max_rounds']} layers, "
             f"k={s['k']} (smoa), max_tokens {s['max_tokens']} (judge/moderator {s['judge_max_tokens']}), "
             f"temperature {s['temperature']}, seed {s['seed']}, cache off; tokens per query (prompt + completion)"]
    header = f"  {'stage':<10}" + "".join(f"{m:>16}" for m in res["methods"])
    lines.append(header)
    for st in STAGES[1:]:
        row = f"  {st:<10}"
        for m in res["methods"].values():
            c = m["per_query_by_stage"].get(st)
            row += f"{(c['total_tokens'] if c else 0):>16.0f}"
        lines.append(row)
    row = f"  {'roles*':<10}"
    for m in res["methods"].values():
        row += f"{m['roles_one_time']['tokens'] / res['items']:>16.1f}"
    lines.append(row)
    row = f"  {'total':<10}"
    for m in res["methods"].values():
        row += f"{m['per_query_total_with_roles']:>16.0f}"
    lines.append(row)
    for name, m in res["methods"].items():
        lines.append(f"  {name}: accuracy {m['accuracy']:.2f} (a 135M model: not a quality figure), wall {m['wall_s']:.0f} s, "
                     f"stops {m['stop_reasons']}, roles one-time {m['roles_one_time']['tokens']:.0f} tokens")
    lines.append(f"  smoa / moa tokens per query: {res['smoa_over_moa']:.2f}   (* roles: one-time cost / items)")
    return "\n".join(lines)
