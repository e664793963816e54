"""HTTP clients alone: CPU per chat completion of each `http_client` of the openai backend.

`calls` completions through `OpenAIBackend.complete`, `in_flight` at a time, against the
fake server (its own process) at `latency_s` per call; the figure is this process's CPU
time per call, so the server's work is not in it. Each client gets a warm-up first
(connections, imports), and the clients take turns `rounds` times, so a change in the
machine's load hits both.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import fake_server, line

CLIENTS = ("aiohttp", "openai-sdk")
TARGET_CPU_MS = 1.0


async def _cpu_ms_per_call(be: Any, calls: int, in_flight: int) -> tuple[float, float]:
    from smoa.types import Request, Settings

    req = Request(messages=({"role": "user", "content": "What is 2+2? " * 20},), model="m1",
                  settings=Settings(max_tokens=64))
    sem = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with sem:
            await be.complete(req)

    await asyncio.gather(*(one() for _ in range(min(100, calls))))  # warm-up
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return 1000 * (time.process_time() - c0) / calls, calls / (time.perf_counter() - t0)


def run(calls: int = 3000, in_flight: int = 64, latency_s: float = 0.05, rounds: int = 2) -> dict[str, Any]:
    from smoa.backends.openai_backend import OpenAIBackend

    res: dict[str, Any] = {"calls": calls, "in_flight": in_flight, "latency_s": latency_s,
                           "cpu_ms": {c: [] for c in CLIENTS}, "calls_per_s": {c: [] for c in CLIENTS}}
    with fake_server(latency_s) as srv:

        async def main() -> None:
            for _ in range(rounds):
                for client in CLIENTS:
                    be = OpenAIBackend(base_url=srv.base_url, http_client=client, max_retries=0)
                    # the SDK is slow: a third as many calls keep its turn about as long
                    n = calls if client == "aiohttp" else max(1, calls // 3)
                    try:
                        cpu, rate = await _cpu_ms_per_call(be, n, in_flight)
                    finally:
                        await be.aclose()
                    res["cpu_ms"][client].append(cpu)
                    res["calls_per_s"][client].append(rate)

        asyncio.run(main())
    return res


def report(res: dict[str, Any]) -> str:
    out = [f"clients: {res['calls']} chat completions per turn, {res['in_flight']} in flight, fake server "
           f"at {res['latency_s'] * 1000:.0f} ms/call; CPU of the calling process per call"]
    for c in CLIENTS:
        cpu = sorted(res["cpu_ms"][c])
        target = TARGET_CPU_MS if c == "aiohttp" else None  # the target is the default client's
        out.append(line(f"CPU ms per call, {c} (best of {len(cpu)})", cpu[0], target, "<=",
                        note=f"all turns: {', '.join(f'{x:.3f}' for x in res['cpu_ms'][c])}"))
    return "\n".join(out)
