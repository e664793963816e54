"""Evaluation: benchmarks and scorers (smoa.eval.benchmarks), answer scoring helpers
(smoa.eval.scoring), the code sandbox (smoa.eval.sandbox), the runner and results store,
reports. Public names are imported lazily, on first use, so ``import smoa.eval`` stays cheap."""

from typing import Any

_LAZY = {
    "run_eval": "runner",
    "arun_eval": "runner",
    "write_report": "report",
    # benchmark loaders/scorers and the sandbox
    "BENCHMARKS": "benchmarks",
    "get_benchmark": "benchmarks",
    "Benchmark": "benchmarks",
    "JudgedBenchmark": "benchmarks",
    "JudgeRequired": "benchmarks",
    "Item": "benchmarks",
    "Score": "benchmarks",
    "SandboxResult": "sandbox",
    "run_python": "sandbox",
    "arun_python": "sandbox",
    "SandboxUnavailable": "sandbox",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
