"""Evaluation harness, engine-independent half: benchmark loaders, scorers, code sandbox.

See :mod:`smoa.eval.benchmarks` (``BENCHMARKS``, ``get_benchmark``), :mod:`smoa.eval.scoring`
and :mod:`smoa.eval.sandbox`. Nothing here calls a model; LLM-judged sets expose the judge
request and the verdict parser for the engine to wire up.
"""

from __future__ import annotations

from .benchmarks import (
    BENCHMARKS,
    Benchmark,
    Item,
    JudgedBenchmark,
    JudgeRequired,
    Score,
    get_benchmark,
)
from .sandbox import SandboxResult, arun_python, run_python

__all__ = [
    "BENCHMARKS", "Benchmark", "Item", "JudgedBenchmark", "JudgeRequired", "Score",
    "get_benchmark", "SandboxResult", "run_python", "arun_python",
]
