"""Library path: `smoa.run(config=PATH)` at concurrency 64, as a user's script would call it.

Many smoa queries (n=8, 3 layers, k=3, roles given) through `smoa.run(query, config=PATH)`,
with the config's backend limited to 64 calls in flight (`max_concurrency`), against the
fake server at 100 ms per call. The bound is limit / latency. Before issue 15, each call of
`smoa.run(config=PATH)` read the file and built its own backends, so the limit did not hold
across queries and every query left sockets open. The run happens in a child process that
records every ResourceWarning (unclosed sockets and transports) up to its exit.
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
gc.collect()
print(json.dumps({"calls": calls, "errors": errors, "wall_s": wall, "cpu_s": cpu,
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
        res = json.loads(p.stdout.strip().splitlines()[-1])
        peak = json.loads(__import__("urllib.request").request.urlopen(srv.root_url + "/stats").read())["peak_in_flight"]
    bound = LIMIT / LATENCY
    res.update(queries=queries, limit=LIMIT, bound_calls_per_s=bound, peak_in_flight=peak,
               calls_per_s=res["calls"] / res["wall_s"], cpu_ms_per_call=1000 * res["cpu_s"] / max(1, res["calls"]))
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
    ])
