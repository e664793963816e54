"""Engine-only queries with no latency, for counting instructions per LLM call.

    valgrind --tool=callgrind python -m bench.engine_only 10
    valgrind --tool=callgrind python -m bench.engine_only 40

smoa queries (n=8, 3 layers, k=3, seed 1) on a scripted backend that answers at once and
keeps no call history, through `bench.throughput.run_queries` (global limit 64, 128
workers). The difference of the two totals over the difference of the calls printed is
the engine's instructions per call, free of start-up and one-time costs and of the
machine's load (BENCHMARKS.md, "Engine CPU per call restored").
"""

from __future__ import annotations

import asyncio
import sys

from smoa.config import PipelineSpec, build_pipeline
from smoa.testing import ScriptedBackend, mixture_responder

from .throughput import LIMIT, WORKERS, run_queries


def main(count: int) -> dict[str, int]:
    be = ScriptedBackend(
        responder=mixture_responder(propose=lambda r: f"answer from seed {r.settings.seed}: {len(r.messages)}"),
        keep_calls=False,
    )
    pipe = build_pipeline(PipelineSpec(method="smoa", n=8, k=3, max_rounds=3, seed=1), instances={"local": be}, cache=False)
    r = asyncio.run(run_queries(pipe, count, LIMIT, WORKERS))
    return {"queries": count, "calls": r["calls"], "errors": r["errors"]}


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
