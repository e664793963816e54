"""Throughput: many smoa queries through one endpoint under a global concurrency limit.

- calls/s for `queries` smoa queries (n=8, 3 layers, k=3) at a global limit of 64 calls in
  flight, against the fake server at 100 ms per call. The bound is limit / latency.
  Through the openai backend's default HTTP client (aiohttp), and through the openai
  SDK (`http_client = "openai-sdk"`) for comparison.
- orchestration CPU per LLM call: process CPU time / calls. Measured end to end (engine +
  HTTP client), and engine only (a scripted backend that sleeps the same 100 ms and does
  no I/O).
- peak memory (max RSS of a fresh process, engine only) as the number of queries grows
  tenfold: queries stream through a fixed pool of WORKERS workers and keep only a summary, so
  memory should not grow. The ratio compares sizes that both keep every worker busy (256 and
  2,560); a run of fewer queries than workers (the 100 also printed) never reaches the steady
  state, so its lower peak says nothing about growth.

Each size runs in its own child process so that its peak RSS is its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from .common import fake_server, http_pipeline, line, private_cache_dir

LIMIT = 64
WORKERS = 128  # queries in flight; enough to keep LIMIT calls busy
TARGET_FRACTION = 0.9
TARGET_CPU_MS = 1.0


async def run_queries(pipe: Any, count: int, limit: int, workers: int) -> dict[str, Any]:
    """Run `count` queries through `workers` concurrent workers sharing one Limiter(limit)."""
    from smoa.engine import Engine
    from smoa.limits import Limiter

    limiter = Limiter(limit)
    it = iter(range(count))
    calls = errors = 0
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal calls, errors
        for i in it:
            try:
                r = await Engine(pipe, limiter=limiter).run(f"Question {i}: what is {i} times 3?")
            except Exception:
                errors += 1
                continue
            calls += len(r.trace.calls)
            latencies.extend(c.latency_s for c in r.trace.calls)

    c0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(workers, count))))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    latencies.sort()
    return {"queries": count, "calls": calls, "errors": errors, "wall_s": wall, "cpu_s": cpu,
            "calls_per_s": calls / wall, "cpu_ms_per_call": 1000 * cpu / max(1, calls),
            "peak_in_flight": limiter.peak, "median_call_s": latencies[len(latencies) // 2] if latencies else 0.0}


def peak_rss_mb() -> float:
    """This process's own peak RSS. Linux keeps `ru_maxrss` across `execve`, so a child
    started from a parent that once held a model (a bench run before this one) would report
    the parent's peak; `VmHWM` belongs to the address space, which `execve` replaces."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for row in f:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, base_url: str, count: int, latency_s: float) -> dict[str, Any]:
    if kind in ("http", "http-sdk"):
        pipe = http_pipeline(base_url, "smoa", 8, 3, 3, http_client="openai-sdk" if kind == "http-sdk" else "aiohttp")

        async def main() -> dict[str, Any]:
            try:
                return await run_queries(pipe, count, LIMIT, WORKERS)
            finally:
                await pipe.proposers[0].backend.aclose()
    else:
        from smoa.config import PipelineSpec, build_pipeline
        from smoa.testing import ScriptedBackend, mixture_responder

        be = ScriptedBackend(
            responder=mixture_responder(propose=lambda r: f"answer from seed {r.settings.seed}: {len(r.messages)}"),
            latency_s=latency_s,
            keep_calls=False,  # its call history would grow with the queries: not the engine's memory
        )
        pipe = build_pipeline(PipelineSpec(method="smoa", n=8, k=3, max_rounds=3, seed=1), instances={"local": be}, cache=False)

        async def main() -> dict[str, Any]:
            return await run_queries(pipe, count, LIMIT, WORKERS)

    res = asyncio.run(main())
    res["max_rss_mb"] = peak_rss_mb()
    return res


def _spawn(kind: str, base_url: str, count: int, latency_s: float) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run(
        [sys.executable, "-m", "bench.throughput", kind, base_url, str(count), str(latency_s)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"throughput child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


MEMORY_SIZES = (100, 2 * WORKERS, 20 * WORKERS)


def run(queries: int = 500, memory_sizes: tuple[int, ...] = MEMORY_SIZES, latency_s: float = 0.1) -> dict[str, Any]:
    with private_cache_dir(), fake_server(latency_s) as srv:
        _spawn("http", srv.base_url, 2, latency_s)  # warm the role cache: later children share it
        main = _spawn("http", srv.base_url, queries, latency_s)
        sdk = _spawn("http-sdk", srv.base_url, queries, latency_s)
        engine_only = _spawn("scripted", "-", queries, latency_s)
        # engine-only children: the engine and the query runner are what must not grow with
        # the number of queries, and they finish in seconds rather than minutes
        mem = {str(n): _spawn("scripted", "-", n, latency_s) for n in memory_sizes}
    bound = LIMIT / latency_s
    return {"limit": LIMIT, "latency_s": latency_s, "bound_calls_per_s": bound, "http": main, "http_sdk": sdk,
            "engine_only": engine_only, "memory": mem, "fraction": main["calls_per_s"] / bound,
            "sdk_fraction": sdk["calls_per_s"] / bound,
            "engine_only_fraction": engine_only["calls_per_s"] / bound}


def report(res: dict[str, Any]) -> str:
    h, e = res["http"], res["engine_only"]
    lines = [f"throughput: {h['queries']} smoa queries (n=8, 3 layers, k=3), global limit {res['limit']}, "
             f"{res['latency_s'] * 1000:.0f} ms/call; bound {res['bound_calls_per_s']:.0f} calls/s"]
    lines.append(line("calls/s / bound, fake server over HTTP", res["fraction"], TARGET_FRACTION, ">=", fmt="{:.3f}",
                      note=f"{h['calls_per_s']:.0f} calls/s, {h['calls']} calls in {h['wall_s']:.1f} s, median call {h['median_call_s'] * 1000:.0f} ms, peak in flight {h['peak_in_flight']}, {h['errors']} errors"))
    sdk = res.get("http_sdk")
    if sdk:
        lines.append(line("calls/s / bound, same through the openai SDK", res["sdk_fraction"], fmt="{:.3f}",
                          note=f"{sdk['calls_per_s']:.0f} calls/s, median call {sdk['median_call_s'] * 1000:.0f} ms, {sdk['errors']} errors"))
    lines.append(line("calls/s / bound, engine only (scripted)", res["engine_only_fraction"], TARGET_FRACTION, ">=", fmt="{:.3f}",
                      note=f"{e['calls_per_s']:.0f} calls/s"))
    lines.append(line("CPU ms per LLM call, engine only", e["cpu_ms_per_call"], TARGET_CPU_MS, "<=", fmt="{:.3f}"))
    lines.append(line("CPU ms per LLM call, engine + aiohttp client", h["cpu_ms_per_call"], TARGET_CPU_MS, "<=", fmt="{:.3f}"))
    if sdk:
        lines.append(line("CPU ms per LLM call, engine + openai SDK", sdk["cpu_ms_per_call"], fmt="{:.3f}"))
    sizes = sorted(res["memory"], key=int)
    for n in sizes:
        r = res["memory"][n]
        lines.append(line(f"peak RSS MB, {n} queries (engine only)", r["max_rss_mb"], fmt="{:.0f}", note=f"{r['calls_per_s']:.0f} calls/s"))
    if len(sizes) >= 2:
        # the base is the smallest size that fills every worker, when there is one
        base = next((n for n in sizes if int(n) >= WORKERS and n != sizes[-1]), sizes[0])
        a, b = res["memory"][base]["max_rss_mb"], res["memory"][sizes[-1]]["max_rss_mb"]
        note = "roughly flat" if int(base) >= WORKERS else f"fewer queries than the {WORKERS} workers: not the steady state"
        lines.append(line(f"peak RSS {sizes[-1]} / {base} queries", b / a, 1.2, "<=", fmt="{:.2f}", note=note))
    return "\n".join(lines)


if __name__ == "__main__":
    kind, url, count, lat = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(child(kind, url, count, lat)))
