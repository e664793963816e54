"""Evaluation: benchmarks and scorers (smoa.eval.benchmarks), the runner and results store,
reports. `run_eval`, `arun_eval` and `write_report` are imported lazily, on first use."""

from typing import Any

_LAZY = {"run_eval": "runner", "arun_eval": "runner", "write_report": "report"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
