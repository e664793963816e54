"""Library path: `smoa.run(config=PATH)` at concurrency 64, as a user's script would call it.

Many smoa queries (n=8, 3 layers, k=3, roles given) through `smoa.run(query, config=PATH)`,
with the config's backend limited to 64 calls in flight (`max_concurrency`), against the
fake server at 100 ms per call. The bound is limit / latency. Before issue 15, each call of
`smoa.run(config=PATH)` read the file and built its own backends, so the limit did not hold
across queries and every query left sockets open. The run happens in a child process that
records every ResourceWarning (unclosed sockets and transports) up to its exit.

The child also times Python's garbage collector (`gc.callbacks`): a full collection walks
every object the process holds, smoa's imports alone included (about 55,000 objects after
`import smoa` and its backends), and while it runs no response is read, so each one stalls
all 64 calls in flight. It is not what kept this bench under 0.9 on AMD EPYC: a child that
called `gc.freeze()` after its imports (so collections skip what import made) scored the
same, 0.905 and 0.921 against 0.922 and 0.910 (session 8, BENCHMARKS.md). What did was
the fake server's schema validation on every judge call (smoa.fakeserver, `_validator`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from .common import fake_server, line

LIMIT = 64
LATENCY = 0.1
TARGET_FRACTION = 0.9

CHILD = r'''
import asyncio, gc, json, sys, time, warnings
warnings.simplefilter("always", ResourceWarning)
caught = []
warnings.showwarning = lambda msg, cat, *a, **k: caught.append(str(msg))
import smoa

path, count, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pauses, started = [], [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses.append((info["generation"], time.perf_counter() - started[0]))
gc.callbacks.append(on_gc)

async def main():
    it = iter(range(count))
    calls = errors = 0

    async def worker():
        nonlocal calls, errors
        for i in it:
            try:
                r = await smoa.run(f"Question {i}: what is {i} times 3?", config=path)
            except Exception:
                errors += 1
                continue
            calls += len(r.trace.calls)

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return calls, errors, time.perf_counter() - t0, time.process_time() - c0

calls, errors, wall, cpu = asyncio.run(main())
gc.callbacks.remove(on_gc)
gc.collect()
print(json.dumps({"calls": calls, "errors": errors, "wall_s": wall, "cpu_s": cpu,
                  "gc_s": sum(t for _, t in pauses), "gc_full": sum(1 for g, _ in pauses if g == 2),
                  "gc_longest_s": max((t for _, t in pauses), default=0.0),
                  "unclosed": [w for w in caught if "unclosed" in w.lower()]}))
'''


def config_text(base_url: str) -> str:
    roles = ", ".join(f'"You are expert {i}."' for i in range(1, 9))
    return textwrap.dedent(f'''
        [backends.fake]
        type = "openai"
        base_url = "{base_url}"
        max_retries = 0
        max_concurrency = {LIMIT}

        [pipelines.bench]
        method = "smoa"
        n = 8
        k = 3
        max_rounds = 3
        seed = 1
        cache = false
        roles = [{roles}]
        agent = {{ backend = "fake", model = "fake-model", max_tokens = 64 }}
    ''')


def run(queries: int = 500, workers: int = 128) -> dict[str, Any]:
    import os
    import tempfile
    import urllib.request

    with fake_server(LATENCY) as srv, tempfile.TemporaryDirectory(prefix="smoa-bench-") as d:
        cfg = os.path.join(d, "smoa.toml")
        with open(cfg, "w") as f:
            f.write(config_text(srv.base_url))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
               "SMOA_CACHE_DIR": os.path.join(d, "cache"), "SMOA_NO_TRACE_STORE": "1"}
        p = subprocess.run([sys.executable, "-c", CHILD, cfg, str(queries), str(workers)],
                           capture_output=True, text=True, env=env, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"library bench child failed: {p.stderr[-2000:]}")
        res: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        res["peak_in_flight"] = json.loads(urllib.request.urlopen(srv.root_url + "/stats").read())["peak_in_flight"]
    bound = LIMIT / LATENCY
    res.update(queries=queries, limit=LIMIT, bound_calls_per_s=bound, calls_per_s=res["calls"] / res["wall_s"],
               cpu_ms_per_call=1000 * res["cpu_s"] / max(1, res["calls"]))
    res["fraction_of_bound"] = res["calls_per_s"] / bound
    return res


def report(res: dict[str, Any]) -> str:
    return "\n".join([
        f"library: smoa.run(config=PATH), {res['queries']} smoa queries, limit {res['limit']} (max_concurrency), "
        f"{LATENCY * 1000:.0f} ms per call",
        line("calls/s over the bound", res["fraction_of_bound"], TARGET_FRACTION, ">="),
        line("peak calls in flight at the server", res["peak_in_flight"], res["limit"], "<=", fmt="{:.0f}"),
        line("unclosed sockets/transports at exit", len(res["unclosed"]), 0, "<=", fmt="{:.0f}"),
        line("CPU ms per LLM call (engine + client)", res["cpu_ms_per_call"], fmt="{:.3f}"),
        line("errors", res["errors"], 0, "<=", fmt="{:.0f}"),
        line("garbage collector: share of wall time", res["gc_s"] / res["wall_s"],
             note=f"{res['gc_full']} full collections, longest pause {1000 * res['gc_longest_s']:.0f} ms"),
    ])
