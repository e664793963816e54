"""Caching: a repeated run of the same eval items with the response cache on.

The fake server counts the requests it serves: the second run must send none. smoa
(n=8, 3 layers, k=3) at temperature 0 with a user-given seed, so every call is cacheable;
the cache lives in a throw-away SMOA_CACHE_DIR.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from .common import fake_server, line, private_cache_dir
from .cost import load_items


def _served(srv: Any) -> int:
    with urllib.request.urlopen(srv.root_url + "/stats", timeout=10) as r:
        return int(json.loads(r.read())["requests"])


def run(items: int = 50, latency_s: float = 0.1) -> dict[str, Any]:
    from smoa.cache import shared_cache
    from smoa.config import AgentSpec, BackendSpec, PipelineSpec, build_pipeline
    from smoa.engine import Engine
    from smoa.limits import Limiter

    data = load_items(items)
    runs = []
    with private_cache_dir(), fake_server(latency_s) as srv:
        for attempt in (1, 2):
            spec = PipelineSpec(method="smoa", n=8, k=3, max_rounds=3, seed=7,
                                agent=AgentSpec(backend="fake", model="fake-model", temperature=0.0, max_tokens=64))
            pipe = build_pipeline(spec, backends={"fake": BackendSpec(base_url=srv.base_url, max_retries=0)})
            assert pipe.cache, "the response cache should be on by default"
            before = _served(srv)
            limiter = Limiter(64)

            async def main(pipe: Any = pipe, limiter: Limiter = limiter) -> list[Any]:
                try:
                    return await asyncio.gather(*(Engine(pipe, limiter=limiter).run(it["question"]) for it in data))
                finally:
                    await pipe.proposers[0].backend.aclose()

            t0 = time.perf_counter()
            results = asyncio.run(main())
            wall = time.perf_counter() - t0
            calls = sum(len(r.trace.calls) for r in results)
            cached = sum(r.trace.cost()["total"]["cached"] for r in results)
            runs.append({"run": attempt, "calls": calls, "cached": cached, "hit_rate": cached / calls,
                         "server_requests": _served(srv) - before, "wall_s": wall,
                         "answers": [r.answer for r in results]})
        stats = shared_cache().stats()
    same = runs[0]["answers"] == runs[1]["answers"]
    for r in runs:
        r.pop("answers")
    return {"items": len(data), "runs": runs, "same_answers": same, "cache": stats}


def report(res: dict[str, Any]) -> str:
    a, b = res["runs"]
    lines = [f"caching: {res['items']} GSM8K questions, smoa n=8 k=3 3 layers, temperature 0, seed 7, fake server, run twice"]
    lines.append(line("hit rate, first run", a["hit_rate"], fmt="{:.3f}", note=f"{a['server_requests']} requests served, {a['wall_s']:.1f} s"))
    lines.append(line("hit rate, repeated run", b["hit_rate"], 1.0, ">=", fmt="{:.3f}",
                      note=f"{b['server_requests']} requests served, {b['wall_s']:.2f} s, same answers: {res['same_answers']}"))
    lines.append(line("model calls in the repeated run", b["server_requests"], 0, "<=", fmt="{:.0f}"))
    return "\n".join(lines)
