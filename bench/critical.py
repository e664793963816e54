"""Critical path: does the mixture cost only its slowest call per stage?

smoa (n=8, 3 layers, k=3), moa and mad at the same n and layers, and smoa with every call
run one at a time (what the SMoA reference code does), against the fake OpenAI-compatible
server with a fixed per-call latency. Ratio = wall time / sum over stages of the slowest call.
The openai backend uses its default HTTP client (aiohttp); "smoa-openai-sdk" is smoa through the
openai SDK instead, for comparison.
"""

from __future__ import annotations

import asyncio
from typing import Any

from smoa.engine import Engine

from .common import critical_path_s, fake_server, http_pipeline, line, median, private_cache_dir

TARGET = 1.05


async def _one(pipe, sequential: bool, i: int) -> dict[str, Any]:
    r = await Engine(pipe, sequential=sequential).run(f"Question {i}: what is {i} + {i}?")
    t = r.trace
    cp = critical_path_s(t)
    return {"wall_s": t.wall_s, "critical_s": cp, "ratio": t.wall_s / cp, "calls": len(t.calls),
            "stages": len({(c.stage, c.layer) for c in t.calls})}


def run(latency_s: float = 0.1, repeats: int = 5, n: int = 8, rounds: int = 3, k: int = 3) -> dict[str, Any]:
    variants = {
        "smoa": ("smoa", k, False),
        "moa": ("moa", None, False),
        "mad": ("mad", None, False),
        "smoa-sequential": ("smoa", k, True),
        "smoa-openai-sdk": ("smoa", k, False),
    }
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with private_cache_dir(), fake_server(latency_s) as srv:
        pipes = {v: http_pipeline(srv.base_url, m, n, rounds, kk, http_client="openai-sdk" if v.endswith("-sdk") else "aiohttp")
                 for v, (m, kk, _) in variants.items()}

        async def main() -> None:
            for v in variants:  # warm up: connections, role generation (then cached)
                await _one(pipes[v], False, -1)
            for i in range(repeats):  # interleaved, so load on the machine hits every variant alike
                for v, (_, _, seq) in variants.items():
                    rows[v].append(await _one(pipes[v], seq, i))
            for p in pipes.values():
                await p.proposers[0].backend.aclose()

        asyncio.run(main())
    out: dict[str, Any] = {"latency_s": latency_s, "n": n, "rounds": rounds, "k": k, "repeats": repeats, "variants": {}}
    for v, rs in rows.items():
        out["variants"][v] = {
            "ratio_median": median([r["ratio"] for r in rs]),
            "ratio_max": max(r["ratio"] for r in rs),
            "wall_s_median": median([r["wall_s"] for r in rs]),
            "critical_s_median": median([r["critical_s"] for r in rs]),
            "calls": rs[0]["calls"],
            "stages": rs[0]["stages"],
            "ratios": [round(r["ratio"], 4) for r in rs],
        }
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"critical path: fake server at {res['latency_s'] * 1000:.0f} ms/call, n={res['n']}, "
             f"{res['rounds']} layers, k={res['k']}, median of {res['repeats']} interleaved runs"]
    for v, r in res["variants"].items():
        note = f"wall {r['wall_s_median']:.3f} s, critical path {r['critical_s_median']:.3f} s, {r['calls']} calls in {r['stages']} stages"
        lines.append(line(f"wall / critical path, {v}", r["ratio_median"], TARGET if v == "smoa" else None, "<=", note=note))
    return "\n".join(lines)
